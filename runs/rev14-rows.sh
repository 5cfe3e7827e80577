set -x
Q="nice -n 5 .venv/bin/quicksilver"
# calibrated, and the threshold re-chosen at seed 0 (0.28), before this script
.venv/bin/python -m tests.test_equivalence --write
$Q eval infill --set single-line --length oracle --procs 2 --json evals/results/single-line-oracle.json
$Q eval infill --set single-line --length unknown --procs 2 --json evals/results/single-line-unknown.json
$Q eval editor --per-kind 40 --seed 1 --json evals/results/editor.json --plot evals/results/editor-precision-coverage.png
$Q eval api --set single-line --max-tokens 128 --json evals/results/api-single-line.json
$Q eval names --json evals/results/names.json
$Q eval repo --json evals/results/repo.json
$Q eval edits --json evals/results/edits.json
$Q eval edits --seed 1 --json evals/results/edits-seed1.json
$Q eval nextedits --json evals/results/nextedits.json
$Q bench --typing --json evals/results/typing-replay.json
echo ROWS-DONE
