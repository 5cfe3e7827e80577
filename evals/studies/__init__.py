"""Studies whose decision is made but that are still re-run: the twin comparison (`eval compare`) and the
unknown-length policies (`eval length`). What they decided, with their numbers, is in docs/history.md."""
