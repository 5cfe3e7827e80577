"""Run untrusted generated code: a separate process with time, memory, CPU and process limits, a fresh temporary
directory, an unprivileged user and no network where the OS allows it. Passing means printing a secret marker
after the tests, so a program that exits early, crashes or is killed counts as a failure."""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

TIMEOUT_S = 10.0
CPU_S = 8
MEMORY_BYTES = 1 << 30
MAX_PROCESSES = 64          # per unprivileged user: stops fork bombs
MAX_FILE_BYTES = 16 << 20
NOBODY = 65534


@dataclass
class Outcome:
    passed: bool
    reason: str              # "passed", "failed", "timeout"


def _limits() -> None:
    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_S, CPU_S))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _command(python: str) -> list[str]:
    """Drop to an unprivileged user in a network namespace of its own when running as root."""
    cmd = [python, "-I", "-S", "-"]
    if os.geteuid() == 0 and shutil.which("setpriv"):
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
        if shutil.which("unshare"):
            cmd = ["unshare", "--net", *cmd]
    return cmd


def run_program(program: str, timeout: float = TIMEOUT_S) -> Outcome:
    marker = uuid.uuid4().hex
    source = f"{program}\n\nprint({marker!r})\n"
    with tempfile.TemporaryDirectory(prefix="qs-sandbox-") as tmp:
        os.chmod(tmp, 0o777)
        proc = subprocess.Popen(_command(sys.executable), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=tmp, preexec_fn=_limits, text=True,
                                env={"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp})
        try:
            out, _ = proc.communicate(source, timeout=timeout)
            reason = "passed" if proc.returncode == 0 and marker in out else "failed"
        except subprocess.TimeoutExpired:
            reason = "timeout"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole session: children and forks too
            except ProcessLookupError:
                pass
            proc.wait()
    return Outcome(reason == "passed", reason)


def run_many(programs: list[str], workers: int, progress=None) -> list[Outcome]:
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = []
        for outcome in pool.map(run_program, programs):
            results.append(outcome)
            if progress:
                progress.update(1)
        return results
