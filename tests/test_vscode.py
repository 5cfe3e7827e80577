"""The VS Code extension builds with npm (TypeScript, vscode-languageclient) and packages as a .vsix."""
import json
import shutil
import subprocess
import zipfile

from tests.conftest import ROOT, program

EXTENSION = ROOT / "lsp" / "clients" / "vscode"


def test_extension_builds_and_packages(tmp_path):
    npm = program("npm", package="npm")
    work = tmp_path / "vscode"
    shutil.copytree(EXTENSION, work, ignore=shutil.ignore_patterns("node_modules", "out", "*.vsix"))
    for step in (["ci", "--no-audit", "--no-fund"], ["run", "compile"], ["run", "package"]):
        proc = subprocess.run([npm, *step], cwd=work, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"npm {' '.join(step)}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}"
    with zipfile.ZipFile(work / "quicksilver.vsix") as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("extension/package.json"))
        code = z.read("extension/out/extension.js").decode()
    assert "extension/node_modules/vscode-languageclient/package.json" in names
    assert manifest["main"] == "./out/extension.js" and "quicksilver.serverUrl" in json.dumps(manifest)
    assert '"lsp"' in code and "--server" in code and "registerProposedFeatures" in code
