"""The dashboard in headless Chromium (axes, windows, gaps, an empty server), /v1/stats, and its live socket."""
import re
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from server.store import Store
from tests.conftest import API_KEY as KEY
from tests.conftest import ROOT, free_port, program, start_server, stop_server

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000", "--window-size=1280,900"]
SHUTDOWN_S = 5            # Ctrl+C with a dashboard open must end the server within this
LEAVE_S = 2               # the server forgets a dashboard that left within this
LEAD_COPY = "/tmp/dashboard.png"
OLD_RUN = range(50, 35, -1)     # minutes ago with requests, then nothing for 15 minutes ...
NEW_RUN = range(20, 0, -1)      # ... then requests every minute up to now; the last five minutes' (m = 1..5) are
WINDOW_MS = {m: (100 + 10 * m, 150 + 10 * m, 260 + 10 * m) for m in range(1, 6)}
WINDOW_P50, WINDOW_P95, WINDOW_TPS = 180, 310, 100.0     # worked out by hand from WINDOW_MS (3000 ms, 300 tokens)
SEED_TOKENS, SEED_PASSES = 20, 4
SEED_LEAD_S = 50                # so the window holds minute 5's requests for 50 s after seeding, never minute 6's
TILES = ("p50", "p95", "tps", "tpf", "acceptance")


def chromium() -> str:
    return program("chromium", "chromium-browser", package="chromium")


def dump_dom(url: str, tmp_path) -> str:
    run = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    return run.stdout


def screenshot(url: str, path) -> None:
    subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={path.parent / 'profile'}", f"--screenshot={path}",
                    url], capture_output=True, timeout=120)
    assert path.exists() and path.stat().st_size > 10_000


def texts(dom: str, cls: str) -> list[str]:
    """The text of every element whose class list holds `cls`."""
    return re.findall(rf'<[^>]*class="(?:[^"]* )?{cls}(?: [^"]*)?"[^>]*>([^<]*)<', dom)


def series(dom: str, chart: str, name: str) -> int:
    """How many separate line pieces series `name` has in chart `chart`."""
    svg = re.search(rf'<svg[^>]*id="{chart}".*?</svg>', dom, re.S).group(0)
    return len(re.findall(rf'<polyline[^>]*data-series="{name}"', svg))


def seed(db, now: float) -> None:
    """Three requests a minute, with a 15-minute gap, in the last hour; the last five minutes hold WINDOW_MS. A
    minute's requests share one timestamp (so one bucket): m minutes ago less SEED_LEAD_S."""
    store = Store(db)
    with store._db(write=True) as db:
        for m in [*OLD_RUN, *NEW_RUN]:
            base = 400 + 25 * (m % 7)
            for j, ms in enumerate(WINDOW_MS.get(m, (base, 1.25 * base, 1.6 * base))):
                db.execute("INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 (f"seed-{m}-{j}", "/v1/completions", ms, ms / 4, SEED_TOKENS, 5, SEED_PASSES, 200,
                                  now - 60 * m + SEED_LEAD_S))
    store.close()


def stats(base: str) -> dict:
    return httpx.get(base + "/v1/stats", headers={"Authorization": f"Bearer {KEY}"}).json()


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


@pytest.fixture(scope="module")
def empty_server(tiny_model_dir, tmp_path_factory):
    srv, thread, base = start_server(tiny_model_dir, tmp_path_factory.mktemp("empty") / "e.sqlite")
    yield {"url": base, "server": srv}
    stop_server(srv, thread)


@pytest.fixture(scope="module")
def gap_server(tiny_model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("gap") / "g.sqlite"
    seed(db, time.time())
    srv, thread, base = start_server(tiny_model_dir, db)
    yield {"url": base}
    stop_server(srv, thread)


def test_page_is_self_contained(busy_server):
    html = httpx.get(busy_server["url"] + f"/dashboard?api_key={KEY}").text
    assert "<svg" in html and not re.search(r"""(src|href)=["']https?://""", html)


def test_dashboard_shows_data_in_chromium(busy_server, tmp_path):
    url = busy_server["url"] + f"/dashboard?api_key={KEY}"
    dom = dump_dom(url, tmp_path)
    assert 'class="series"' in dom, dom[-2000:]            # the charts were drawn from /v1/stats
    assert re.search(r'id="p50">\d+ ms<', dom)
    assert re.search(r'id="tpf">\d+\.\d\d<', dom)
    assert re.search(r"<td>/v1/completions</td>", dom)
    screenshot(url, tmp_path / "dashboard.png")


def test_charts_have_labelled_axes_and_tiles_state_their_window(busy_server, tmp_path):
    dom = dump_dom(busy_server["url"] + f"/dashboard?api_key={KEY}", tmp_path)
    labels = texts(dom, "axis-label")
    assert labels.count("ms") == 1 and labels.count("tokens/s") == 1, labels
    assert sum(label.startswith("time of day") for label in labels) == 2, labels
    assert all(re.fullmatch(r"\d\d:\d\d", t) for t in texts(dom, "x-tick")) and len(texts(dom, "x-tick")) >= 8
    assert all(re.fullmatch(r"\d+(\.\d+)?", t) for t in texts(dom, "y-tick")) and len(texts(dom, "y-tick")) >= 6
    assert texts(dom, "window") == ["last 5 min"] * 4 + ["all time"]


def test_an_empty_server_shows_a_dash_in_every_tile(empty_server, tmp_path):
    dom = dump_dom(empty_server["url"] + f"/dashboard?api_key={KEY}", tmp_path)
    assert "quicksilver/" in dom                           # the page got its data ...
    assert texts(dom, "value") == ["–"] * len(TILES)       # ... and has none to show
    assert texts(dom, "empty") == ["no requests in the last hour"] * 2 and 'class="series"' not in dom
    assert texts(dom, "axis-label").count("ms") == 1 and not texts(dom, "y-tick")   # no made-up scale


def test_tiles_cover_their_stated_window(gap_server):
    tiles = stats(gap_server["url"])["window"]
    assert tiles["seconds"] == 300 and tiles["n"] == 3 * len(WINDOW_MS)
    assert (tiles["p50_ms"], tiles["p95_ms"]) == (WINDOW_P50, WINDOW_P95)
    assert tiles["tokens_per_s"] == pytest.approx(WINDOW_TPS)
    assert tiles["tokens_per_forward"] == pytest.approx(SEED_TOKENS / SEED_PASSES)


def test_a_gap_in_the_history_breaks_the_line(gap_server, tmp_path):
    url = gap_server["url"] + f"/dashboard?api_key={KEY}"
    dom = dump_dom(url, tmp_path)
    for chart, name in (("latency", "p50_ms"), ("latency", "p95_ms"), ("throughput", "tokens_per_s")):
        assert series(dom, chart, name) == 2, (chart, name)
    assert texts(dom, "value")[:4] == [f"{WINDOW_P50} ms", f"{WINDOW_P95} ms", f"{WINDOW_TPS:.0f}",
                                       f"{SEED_TOKENS / SEED_PASSES:.2f}"]
    screenshot(url, tmp_path / "dashboard.png")
    shutil.copy(tmp_path / "dashboard.png", LEAD_COPY)


def test_an_empty_window_has_no_numbers(empty_server):
    body = stats(empty_server["url"])
    assert body["history"] == [] and body["recent"] == []
    assert body["window"] == {"seconds": 300, "n": 0, "p50_ms": None, "p95_ms": None, "tokens_per_s": None,
                              "tokens_per_forward": None}


def test_stats_and_history_survive_a_restart(busy_server):
    first = stats(busy_server["url"])
    assert first["history"] and first["history"][-1]["n"] >= 1 and len(first["recent"]) >= 6
    srv, thread, base = start_server(busy_server["model"], busy_server["db"])
    try:
        assert sum(b["n"] for b in stats(base)["history"]) >= 6
    finally:
        stop_server(srv, thread)


def test_the_server_forgets_a_dashboard_that_left(empty_server):
    live = empty_server["server"].config.app.state.live
    with connect(empty_server["url"].replace("http", "ws") + f"/v1/dashboard/live?api_key={KEY}"):
        deadline = time.monotonic() + LEAVE_S
        while not live and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(live) == 1
    deadline = time.monotonic() + LEAVE_S
    while live and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not live, "the live socket's handler is still waiting for a frame after its client left"


def test_ctrl_c_with_a_dashboard_open_exits_promptly(tiny_model_dir, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--model", str(tiny_model_dir),
                             "--port", str(port), "--db", str(tmp_path / "s.sqlite"), "--api-key", KEY,
                             "--threads", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with connect(f"ws://127.0.0.1:{port}/v1/dashboard/live?api_key={KEY}", origin=base) as ws:
            proc.send_signal(signal.SIGINT)
            t0 = time.monotonic()
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=SHUTDOWN_S)
        try:
            _, stderr = proc.communicate(timeout=SHUTDOWN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server was still running {SHUTDOWN_S} s after Ctrl+C")
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert elapsed < SHUTDOWN_S and proc.returncode in (0, 130), stderr[-2000:]
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr[-2000:]
