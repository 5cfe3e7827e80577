"""The language server's context from the repository: the workspace folder indexed, and names analysis reading the
project's own modules (a real LSP client, the shipped model in process)."""
import asyncio
import re
import subprocess
import sys
import time

from lsprotocol import types as lsp
from pytest_lsp import client_capabilities, make_test_lsp_client

from tests.conftest import ROOT
from tests.test_lsp import at, open_document


async def test_the_workspace_folder_of_a_git_project_is_context(tmp_path):
    """In process, a git work tree opened as the workspace folder is indexed: a cursor that uses a name another
    file of the project defines gets that file's chunk (the log counts it); a folder outside git is not indexed."""
    from tests.test_workspace import MODELS
    for git in (True, False):
        root = tmp_path / f"git-{git}"
        (root / "shop").mkdir(parents=True)
        (root / "shop" / "models.py").write_text(MODELS)
        if git:
            subprocess.run(["git", "init", "-q", str(root)], check=True)
        log_file = root.parent / f"lsp-{git}.log"
        c = make_test_lsp_client()
        await c.start_io(sys.executable, "-m", "runtime.cli", "lsp", "--log-file", str(log_file), cwd=str(ROOT))
        await c.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"),
                                                        root_uri=root.as_uri()))
        uri = (root / "shop" / "cart.py").as_uri()
        open_document(c, uri, "def total(subtotal):\n    if subtotal >= FREE_SHIPPING_THRESHOLD:\n        return \n")
        deadline = time.time() + 30
        while time.time() < deadline:   # indexing runs in the background after `initialized`
            await c.text_document_inline_completion_async(lsp.InlineCompletionParams(
                text_document=lsp.TextDocumentIdentifier(uri=uri), position=at(2, 15),
                context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Invoked)))
            used = [int(n) for n in re.findall(r"(\d+) chunks of other files", log_file.read_text())]
            if not git or (used and used[-1] > 0):
                break
            await asyncio.sleep(0.5)
        # names analysis reads the project's own modules, relative imports included (indexed or not)
        app = (root / "shop" / "app.py").as_uri()
        open_document(c, app, "from .models import Inventory\n\ninventory = Inventory({})\ninventory.re\n")
        await c.text_document_inline_completion_async(lsp.InlineCompletionParams(
            text_document=lsp.TextDocumentIdentifier(uri=app), position=at(3, 12),
            context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Invoked)))
        await c.shutdown_session()
        await c.stop()
        assert used and (used[-1] >= 1 if git else used[-1] == 0), log_file.read_text()[-2000:]
        assert re.findall(r"names: (\S+)", log_file.read_text())[-1] == "1", log_file.read_text()[-2000:]
