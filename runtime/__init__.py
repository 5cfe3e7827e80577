"""quicksilver's inference runtime: ONNX Runtime sessions, the denoising engine, batching and post-processing."""

# Bump when a change alters what the engine generates for the same model and request (sampling rules, healing,
# post-processing): eval results record it, and `quicksilver eval report` marks results made by an earlier one.
# 2: a blank cursor line gets text first (fill_line); blank lines around the window heal into it.
# 3: with a language, an end or a line break is committed only where Python's parser accepts the text (`end_guard`).
# 4: a result ends before a line that repeats one of its own or, past its first line, the line just above or
#    below the cursor (`cut_repeats`); a deadline returns the committed text instead of filling the window.
# 5: healing writes the typed pieces of the cursor's line into the window (only the last piece is decoded); an end
#    marker may be committed with the content before it (END_THRESHOLD); the next keystroke reuses the last one's
#    context (STALE_TOKENS).
# 6: the commit threshold is 0.7 (was 0.9): docs/speed.md has how it was chosen.
# 7: the typed pieces healing writes into the window run in a request's first pass only; later passes read their
#    keys/values from the context (`Engine.region`). The shipped graph scores cached keys apart from new ones
#    (model/graph.py: the same arithmetic, other rounding).
# 8: a completion that glues letters onto a name the file has, making one it has not, is dropped
#    (`invents_a_name`); a result cut short (deadline, window) ends at its last line, not at the next one's
#    indentation; a kept context serves the next keystroke only if its typed pieces were typed on (`typed_on`).
# 9: a one-line completion that breaks the file's syntax keeps its longest start that does not, cut between tokens
#    (before `, ; : ) ] }`, after a closing bracket: `runtime.syntax.keep_valid`), instead of nothing.
# 10: a result keeps at most the client's max_tokens tokens of new text where the engine sizes the window (a healed
#    token that finishes the typed word and goes on counts as one; the window's extra slots no longer add to it);
#    text from the first U+FFFD on is dropped unless the file has one (`cut_broken_character`).
DECODING_REVISION = 10
