"""quicksilver's inference runtime: ONNX Runtime sessions, the denoising engine, batching and post-processing."""

# Bump when a change alters what the engine generates for the same model and request (sampling rules, healing,
# post-processing, contexts): eval results record it, and `quicksilver eval report` marks results made by an
# earlier one. docs/history.md lists what each revision changed.
DECODING_REVISION = 18
# The revision since which the model's completions (everything but edits and the answers analysis gives without
# the model) are what they are now: a revision that changes only those keeps it, so completion results and the
# calibrator made at it stay current (tests/test_equivalence.py checks every recorded completion answer, and the
# calibrator is fitted on the model's completions only). docs/history.md says which rows such a revision re-ran.
COMPLETIONS_SINCE = 17


def current(revision: int | None) -> bool:
    """Whether a completion result (or the calibrator) made at `revision` is current."""
    return revision is not None and COMPLETIONS_SINCE <= revision <= DECODING_REVISION
