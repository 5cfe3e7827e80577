"""The live dashboard in a real headless Chromium, its stats endpoint, and latency history across a restart."""
import re
import shutil
import subprocess

import httpx
import pytest

from tests.conftest import API_KEY as KEY
from tests.conftest import program, start_server, stop_server

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000", "--window-size=1280,1000"]


def chromium() -> str:
    return program("chromium", "chromium-browser", package="chromium")


@pytest.fixture(scope="module")
def busy_server(tiny_model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("dash") / "d.sqlite"
    srv, thread, base = start_server(tiny_model_dir, db)
    for i in range(6):
        r = httpx.post(base + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                       json={"prompt": f"def f{i}(x):\n    ", "max_tokens": 8})
        assert r.status_code == 200
    yield {"url": base, "db": db, "model": tiny_model_dir, "server": (srv, thread)}
    stop_server(srv, thread)


def test_page_is_self_contained(busy_server):
    html = httpx.get(busy_server["url"] + f"/dashboard?api_key={KEY}").text
    assert "<svg" in html and not re.search(r"""(src|href)=["']https?://""", html)


def test_dashboard_shows_data_in_chromium(busy_server, tmp_path):
    browser = chromium()
    url = busy_server["url"] + f"/dashboard?api_key={KEY}"
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, *profile, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'class="series"' in dom, dom[-2000:]            # the charts were drawn from /v1/stats
    assert re.search(r'id="p50">\d+ ms<', dom)
    assert re.search(r"<td>/v1/completions</td>", dom)
    shot = tmp_path / "dashboard.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, *profile, f"--screenshot={shot}", url], capture_output=True,
                   timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    shutil.copy(shot, busy_server["db"].parent / "dashboard.png")


def test_stats_and_history_survive_a_restart(busy_server):
    stats = httpx.get(busy_server["url"] + "/v1/stats", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert stats["history"] and stats["history"][-1]["n"] >= 1 and len(stats["recent"]) >= 6
    srv, thread, base = start_server(busy_server["model"], busy_server["db"])
    try:
        again = httpx.get(base + "/v1/stats", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert sum(b["n"] for b in again["history"]) >= 6
    finally:
        stop_server(srv, thread)
