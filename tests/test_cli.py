"""The `quicksilver` command end to end, in a subprocess, as a user runs it."""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHIPPED

SOURCE = 'import os\n\n\ndef read(path):\n    """Return the text of a file."""\n    \n    return data\n'


def quicksilver(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          input=stdin, timeout=300)


@pytest.mark.parametrize("model", ["tiny", "shipped"])
def test_complete_at_a_file_position_with_stats(model, tiny_model_dir, tmp_path):
    src = tmp_path / "a.py"
    src.write_text(SOURCE)
    model_dir = tiny_model_dir if model == "tiny" else SHIPPED
    proc = quicksilver("complete", "--model", str(model_dir), "--file", str(src), "--line", "6", "--col", "5",
                       "--max-tokens", "16", "--stats")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    assert stats["forward_passes"] >= 1 and stats["tokens"] <= 16 + 2
    assert proc.stdout.endswith("\n")


def test_complete_reads_the_prefix_from_stdin(tiny_model_dir):
    proc = quicksilver("complete", "--model", str(tiny_model_dir), "--mode", "completion", "--max-tokens", "4",
                       stdin="def main():\n    ")
    assert proc.returncode == 0, proc.stderr


def test_bad_model_dir_is_one_clear_line(tmp_path):
    proc = quicksilver("complete", "--model", str(tmp_path), "--prefix", "x = ")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "card.json is missing" in proc.stderr


def test_line_outside_the_file(tmp_path):
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    proc = quicksilver("complete", "--model", str(SHIPPED), "--file", str(src), "--line", "9")
    assert proc.returncode != 0 and "outside the file" in proc.stderr
