"""The workspace index (runtime/workspace.py): what it reads and leaves out, how it follows changes, and that its
chunks reach the model through every HTTP route (`serve --workspace`)."""
from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from runtime.request import Request
from runtime.workspace import MAX_FILE_BYTES, POLL_SECONDS, Workspace, chunks, list_files
from tests.conftest import API_KEY, start_server, stop_server

MODELS = '''"""The shop's records."""
from dataclasses import dataclass

FREE_SHIPPING_THRESHOLD = 50.0


@dataclass
class Inventory:
    items: dict

    def remove(self, sku: str) -> None:
        del self.items[sku]


def shipping_cost(subtotal: float) -> float:
    return 0.0 if subtotal >= FREE_SHIPPING_THRESHOLD else 4.99
'''
SECRET = "API_TOKEN = 'do-not-index-me'\ndef leaked_helper_name():\n    return API_TOKEN\n"


def project(root, git: bool):
    (root / "shop").mkdir()
    (root / "shop" / "models.py").write_text(MODELS)
    (root / "shop" / "secret_settings.py").write_text(SECRET)
    (root / "build").mkdir()
    (root / "build" / "generated_copy.py").write_text(MODELS.replace("Inventory", "GeneratedInventory"))
    (root / "huge.py").write_text("huge_table_entry = 1\n" * (MAX_FILE_BYTES // 20 + 10))
    (root / "blob.py").write_bytes(b"binary_thing = 1\n\0\0\0")
    (root / ".gitignore").write_text("build/\nsecret_*.py\n")
    if git:
        subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


@pytest.mark.parametrize("git", [True, False], ids=["git", "folder"])
def test_ignored_oversize_and_binary_files_are_never_indexed(tmp_path, git):
    root = project(tmp_path, git)
    listed = {p.relative_to(root).as_posix() for p in list_files(root)}
    assert "shop/models.py" in listed
    assert not {"shop/secret_settings.py", "build/generated_copy.py"} & listed
    ws = Workspace(root)
    ws.refresh()
    assert ws.indexed()["files"] == 1   # models.py: huge.py is over the cap, blob.py is binary
    assert ws.search("x = leaked_helper_name(") == [] and ws.search("huge_table_entry") == []
    assert ws.search("binary_thing") == []
    found = ws.search("def total(subtotal):\n    if subtotal >= FREE_SHIPPING_THRESHOLD")
    assert found and found[0].startswith("# shop/models.py\n") and "FREE_SHIPPING_THRESHOLD = 50.0" in found[0]


def test_chunks_follow_the_syntax():
    got = chunks(MODELS, python=True)
    texts = [t for _, _, t in got]
    assert any(t.startswith("@dataclass\nclass Inventory") and "def remove" in t for t in texts)
    assert any(t.startswith("def shipping_cost") for t in texts)
    assert texts[0].startswith('"""The shop') and "FREE_SHIPPING_THRESHOLD = 50.0" in texts[0]
    assert all(b - a <= 64 for a, b, _ in chunks("x = 1\n" * 300, python=True))


def test_changes_are_followed_within_a_second(tmp_path):
    root = project(tmp_path, git=True)
    ws = Workspace(root).start()
    try:
        assert ws.ready.wait(30)
        (root / "shop" / "pricing.py").write_text("def discounted_price_for(member):\n    return 0.9\n")
        (root / "shop" / "models.py").write_text(MODELS.replace("shipping_cost", "delivery_fee"))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15:   # a new file waits for the folder's next listing
            if ws.search("p = discounted_price_for(") and ws.search("fee = delivery_fee("):
                break
            time.sleep(0.1)
        assert ws.search("p = discounted_price_for(")[0].startswith("# shop/pricing.py")
        assert "def delivery_fee" in ws.search("fee = delivery_fee(")[0]
        (root / "shop" / "models.py").write_text(MODELS.replace("remove", "discard"))
        t0 = time.monotonic()
        while "def discard" not in "".join(ws.search("inventory.discard(")) and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert time.monotonic() - t0 <= POLL_SECONDS + 1.0   # a changed file is searchable within about a second
        (root / "shop" / "pricing.py").unlink()
        t0 = time.monotonic()
        while ws.search("p = discounted_price_for(") and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert ws.search("p = discounted_price_for(") == []
    finally:
        ws.close()


def test_ground_keeps_the_clients_chunks_first_and_leaves_out_what_the_request_holds(tmp_path):
    ws = Workspace(project(tmp_path, git=True))
    ws.refresh()
    req = Request(prefix="def total(subtotal):\n    if subtotal >= FREE_SHIPPING_THRESHOLD", extra=("# mine\nx = 1",))
    got = ws.ground(req)
    assert got.extra[0] == "# mine\nx = 1" and got.extra[1].startswith("# shop/models.py")
    assert ws.ground(Request(prefix=MODELS + "\ny = shipping_cost(")).extra == ()   # all of it is in the prompt already
    with pytest.raises(ValueError):
        Workspace(tmp_path / "shop" / "models.py")


def test_the_workspace_reaches_the_model_through_every_route(tiny_model_dir, tmp_path):
    root = project(tmp_path / "repo", git=True) if (tmp_path / "repo").mkdir() is None else None
    prompt = "from shop.models import FREE_SHIPPING_THRESHOLD\n\ndef total(subtotal):\n    if subtotal >= "
    member = "from shop.models import Inventory\n\n\ndef restock(sku):\n    inventory = Inventory({})\n    inventory.re"
    seen, names = {}, {}
    for workspace, analysis in ((None, True), (root, True), (root, False)):
        srv, thread, url = start_server(tiny_model_dir, tmp_path / f"{workspace is None}{analysis}.sqlite",
                                        workspace=workspace, names=analysis)
        try:
            if workspace is not None:
                deadline = time.time() + 30
                while time.time() < deadline and not srv.config.app.state.workspace.ready.is_set():
                    time.sleep(0.05)
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as http:
                r = http.post("/v1/completions", json={"prompt": prompt, "suffix": "\n", "max_tokens": 8})
                q = http.post("/infill", json={"input_prefix": prompt, "input_suffix": "\n", "n_predict": 8})
                m = http.post("/v1/completions", json={"prompt": member, "suffix": "\n", "max_tokens": 8})
                n = http.post("/infill", json={"input_prefix": member, "input_suffix": "\n", "n_predict": 8})
                assert n.json()["names"] == m.json()["choices"][0]["quicksilver"]["names"]   # both routes say
                assert (n.json()["timings"]["names_ms"] > 0) == analysis   # and how long the analysis took
                assert (m.json()["choices"][0]["quicksilver"]["names_ms"] > 0) == analysis
            assert r.status_code == 200 and q.status_code == 200, (r.text, q.text)
            names[workspace is None, analysis] = m.json()["choices"][0]["quicksilver"]["names"]
            if analysis:
                seen[workspace is None] = (r.json()["choices"][0]["quicksilver"], q.json())
        finally:
            stop_server(srv, thread)
    (bare, bare_infill), (grounded, grounded_infill) = seen[True], seen[False]
    assert bare["extra_chunks"] == 0 and bare_infill["extra_tokens"] == 0
    assert grounded["extra_chunks"] >= 1 and grounded["extra_tokens"] > 0
    assert grounded_infill["extra_chunks"] >= 1 and grounded_infill["extra_tokens"] > 0
    assert grounded["context_tokens"] == bare["context_tokens"] + grounded["extra_tokens"]   # counted, file kept
    assert grounded_infill["tokens_evaluated"] > bare_infill["tokens_evaluated"]
    # names analysis reads the workspace's modules (Inventory has one name starting 're'); serve --no-names: off
    assert names == {(True, True): "unknown", (False, True): "1", (False, False): "not asked"}, names


def test_the_file_a_request_holds_gives_it_its_path_so_relative_imports_resolve(tmp_path):
    from runtime.names import existing_names
    from runtime.request import Request
    from runtime.workspace import Workspace
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "models.py").write_text(MODELS)
    app = ("from .models import Inventory\n\n\ndef empty(inventory: Inventory) -> bool:\n"
           "    return not inventory.items\n\n\ndef restock(inventory: Inventory, sku: str) -> None:\n"
           "    inventory.remove(sku)\n")
    (tmp_path / "shop" / "app.py").write_text(app)
    ws = Workspace(tmp_path)
    try:
        ws.refresh()
        prefix = app[:app.index("remove")]   # the user's buffer, at `inventory.▮`
        req = ws.ground(Request(prefix=prefix, suffix=app[app.index("(sku)"):]))
        assert req.path == str(tmp_path.resolve() / "shop" / "app.py")
        typed, names = existing_names(req.prefix, req.suffix, budget_s=30, path=req.path, root=req.root)
        assert {"items", "remove"} <= set(names) and "restock" not in names
        assert existing_names(req.prefix, req.suffix, budget_s=30, root=req.root) == "unknown"   # without the path
        assert ws.ground(Request(prefix="x = 1\n")).path is None   # nothing of the workspace in it
    finally:
        ws.close()
