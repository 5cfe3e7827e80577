"""The live HTTP API against its own OpenAPI document, with schemathesis and every one of its checks: no server
errors, no undocumented status codes, content types or bodies, schema-valid requests accepted, invalid ones
refused, the right answer to methods a route does not take. Bounded examples, a fixed seed."""
import subprocess
import sys
from pathlib import Path

from tests.conftest import API_KEY as KEY
from tests.conftest import start_server, stop_server

EXAMPLES = 40          # per operation and phase: bounded, the suite must stay short
SEED = 20261201
CONTEXT_TOKENS = 64
CONFIG = Path(__file__).with_name("schemathesis.toml")    # a small window keeps each generated request quick on the tiny model


def test_the_api_keeps_its_schema(tiny_model_dir, tmp_path):
    srv, thread, url = start_server(tiny_model_dir, tmp_path / "schema.sqlite", context_tokens=CONTEXT_TOKENS)
    try:
        r = subprocess.run([str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(CONFIG),
                            "run", url + "/openapi.json",
                            "--checks", "all", "--header", f"Authorization: Bearer {KEY}", "--max-examples",
                            str(EXAMPLES), "--seed", str(SEED), "--workers", "1", "--no-color"],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)   # its .schemathesis/ there
    finally:
        stop_server(srv, thread)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "generated" in r.stdout
