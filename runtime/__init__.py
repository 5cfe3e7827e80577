"""quicksilver's inference runtime: ONNX Runtime sessions, the denoising engine, batching and post-processing."""

# Bump when a change alters what the engine generates for the same model and request (sampling rules, healing,
# post-processing, contexts): eval results record it, and `quicksilver eval report` marks results made by an
# earlier one. docs/history.md lists what each revision changed.
DECODING_REVISION = 15
