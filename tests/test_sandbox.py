"""The eval sandbox against a security probe's escapes: forged passes, surviving forks, lasting files, stdout floods.

Every test runs the real sandbox. Tests that need root (as in CI) skip without it, except when CI=true.
"""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from textwrap import dedent

import pytest

from evals import sandbox
from evals.sandbox import Outcome, run_many, run_program
from tests.conftest import ROOT

needs_root = pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true",
                                reason="uids, namespaces and the uid kill need root (as in CI)")
FLOOD_PEAK_BYTES = 48 << 20     # how much a 300 MB stdout flood may raise the parent's peak RSS
FLOOD_SECONDS = 5

CORRECT = {name: dedent(program) for name, program in {
    "standard library": """
        import bisect, collections, hashlib, heapq, itertools, math, re, string
        assert math.gcd(12, 18) == 6 and list(itertools.accumulate([1, 2, 3])) == [1, 3, 6]
        assert collections.Counter("abca")["a"] == 2 and re.findall(r"\\d+", "a1b22") == ["1", "22"]
        assert hashlib.md5(b"x").hexdigest() == "9dd4e461268c8034f5c8564e155c67a6"
        assert heapq.nsmallest(2, [5, 1, 4]) == [1, 4] and bisect.bisect([1, 3], 2) == 1 and string.digits
        """,
    "namedtuple, enum, typing, dataclass": """
        import collections, dataclasses, enum, typing
        P = collections.namedtuple("P", "x y")
        E = enum.Enum("E", "A B")
        class N(typing.NamedTuple):
            a: int
        @dataclasses.dataclass
        class D:
            x: int = 1
        assert P(1, 2).y == 2 and E.B.value == 2 and N(3).a == 3 and D().x == 1
        """,
    "recursion, classes, generators": """
        import sys
        sys.setrecursionlimit(5000)
        def depth(n):
            return 0 if n == 0 else 1 + depth(n - 1)
        class Stack:
            def __init__(self):
                self.items = []
            def push(self, x):
                self.items.append(x)
                return self
        def gen():
            yield from range(3)
        assert depth(3000) == 3000 and Stack().push(1).items == [1] and list(gen()) == [0, 1, 2]
        """,
    "exceptions, printing, pickle, threads": """
        import pickle, threading
        try:
            {}["k"]
        except KeyError as e:
            assert e.__traceback__.tb_lineno == 4
        print("x" * 100000)
        class C:
            pass
        pickle.loads(pickle.dumps(C()))
        t = threading.Thread(target=print)
        t.start()
        t.join()
        """,
    "files in the working and temporary directories": """
        import tempfile
        with open("f", "w") as f:
            f.write("1")
        with tempfile.TemporaryDirectory() as d, open(d + "/g", "w") as g:
            g.write("2")
        assert open("f").read() == "1"
        """,
}.items()}

# Each forgery prints every 32-hex-digit string it can reach, then exits 0: it passes exactly if it found the marker.
LEAK = dedent("""
    import os, re, sys
    def leak(x):
        s = x if isinstance(x, bytes) else repr(x).encode()
        runs = set(re.findall(rb"[0-9a-f]{32,}", s))
        for w in {r[i:i + 32] for r in runs for i in range(len(r) - 31)}:
            print(w.decode())
    def walk(f):
        while f is not None:
            leak(f.f_locals)
            leak(f.f_code.co_consts)
            f = f.f_back
    """)
DONE = "\nsys.stdout.flush()\nos._exit(0)\n"
FORGERIES = {name: dedent(program) for name, program in {
    "co_consts of its own code": "walk(sys._getframe())",
    "frames from a traceback": """
        try:
            1 / 0
        except Exception as e:
            walk(e.__traceback__.tb_frame)
        """,
    "frames from a running generator": """
        def g():
            walk(it.gi_frame)
            yield
        it = g()
        next(it)
        """,
    "gc.get_objects": "import gc\nfor o in gc.get_objects():\n    leak(o)",
    "frames from gc.garbage": """
        import gc
        def f():
            try:
                1 / 0
            except Exception as e:
                return e
        e = f()
        e.cycle = e
        del e
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        for o in gc.garbage:
            if type(o).__name__ == "frame":
                walk(o)
        """,
    "a signal handler's frame": """
        import signal, time
        signal.signal(signal.SIGALRM, lambda n, f: walk(f))
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        time.sleep(0.2)
        """,
    "a trace function": "sys.settrace(lambda f, e, a: walk(f))\n(lambda: 0)()",
    "sys._current_frames": "for f in sys._current_frames().values():\n    walk(f)",
    "ctypes": """
        import ctypes
        ctypes.pythonapi.PyEval_GetFrame.restype = ctypes.py_object
        walk(ctypes.pythonapi.PyEval_GetFrame())
        """,
    "inherited file descriptors": """
        for fd in range(3, 256):
            try:
                leak(os.read(fd, 4096))
            except OSError:
                pass
        """,
    "/proc/self/fd": """
        for n in os.listdir("/proc/self/fd"):
            try:
                leak(open("/proc/self/fd/" + n, "rb").read())
            except OSError:
                pass
        """,
    "/proc/self/mem": """
        root = os.open("/", os.O_RDONLY)  # a relative path past any check on the path's text
        mem = os.open("proc/self/mem", os.O_RDONLY, dir_fd=root)
        for line in os.read(os.open("proc/self/maps", os.O_RDONLY, dir_fd=root), 1 << 20).splitlines():
            lo, hi = (int(x, 16) for x in line.split()[0].split(b"-"))
            for at in range(lo, hi, 1 << 20):
                try:
                    leak(os.pread(mem, min(1 << 20, hi - at), at))
                except OSError:
                    pass
        """,
    "the __main__ module": "import __main__\nleak(vars(__main__))",
    "os._exit(0) before the tests": "",
    "sys.exit(0) before the tests": "sys.exit(0)",
    "KeyboardInterrupt before the tests": "raise KeyboardInterrupt",
}.items()}

# Each would pass if the sandbox allowed what it does.
REFUSED = {name: dedent(program) for name, program in {
    "sys._getframe": "import sys\nsys._getframe()",
    "a traceback's frame": "try:\n    1 / 0\nexcept Exception as e:\n    e.__traceback__.tb_frame",
    "a generator's frame": "(x for x in ()).gi_frame",
    "sys.settrace": "import sys\nsys.settrace(None)",
    "sys._current_frames": "import sys\nsys._current_frames()",
    "gc.get_referrers": "import gc\ngc.get_referrers(gc)",
    "gc.set_debug": "import gc\ngc.set_debug(0)",
    "signal.signal": "import signal\nsignal.signal(signal.SIGUSR1, signal.SIG_IGN)",
    "ctypes": "import ctypes",
    "a second copy of a builtin module": """
        import _imp, importlib.machinery
        _imp.create_builtin(importlib.machinery.BuiltinImporter.find_spec("gc"))
        """,
    "marshal.loads of hand-made bytes": "import marshal\nmarshal.loads(marshal.dumps(compile('1', 'x', 'exec')))",
    "code.replace": "(lambda: 0).__code__.replace(co_consts=(None,))",
    "os.fork": "import os\nif os.fork() == 0:\n    os._exit(0)",
    "os.system": "import os\nos.system('true')",
    "subprocess": "import subprocess\nsubprocess.run(['true'])",
    "_posixsubprocess.fork_exec": """
        import _posixsubprocess, os
        r, w = os.pipe()
        _posixsubprocess.fork_exec([b"/bin/true"], [b"/bin/true"], True, (), None, None, -1, -1, -1, -1, -1, -1,
                                   r, w, True, False, -1, None, None, None, -1, None, False)
        """,
    "reading /proc": "open('/proc/self/status').read()",
    "a socket": "import socket\nsocket.socket()",
    "os.kill": "import os\nos.kill(os.getpid(), 0)",
    "sys.addaudithook": """
        import sys
        seen = []
        sys.addaudithook(lambda event, args: seen.append(event))
        sys.audit("probe")
        assert seen
        """,
    "sys._current_frames with the runner's constants emptied": """
        import gc, sys
        runner = gc.set_debug.__globals__
        for name in [name for name in runner if name.isupper()]:
            runner[name] = type(runner[name])()
        sys._current_frames()
        """,
    "marshal.loads with builtins rewritten": """
        import builtins, json, marshal
        legit = open(json.__cached__, "rb").read()[16:]
        builtins.memoryview = type("View", (), {"__init__": lambda self, data: None, "tobytes": lambda self: legit})
        open(json.__cached__, "rb").close()
        marshal.loads(marshal.dumps(compile("1", "x", "exec")))
        """,
}.items()}

FLOOD_PROBE = dedent("""
    import json, time
    from evals.sandbox import run_program
    def peak():
        return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) << 10
    run_program("pass")
    before, start = peak(), time.monotonic()
    outcome = run_program("print('x' * (300 << 20))")
    print(json.dumps({"passed": outcome.passed, "growth": peak() - before, "seconds": time.monotonic() - start}))
    """)


def _fd_holders(token: str) -> list[int]:
    """Pids of processes with an open file whose path contains token."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if token in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    pids.append(int(pid))
                    break
            except OSError:
                pass
    return pids


def _uid_processes(uid: int) -> list[int]:
    """Pids of live (not zombie) processes with uid among their real, effective, saved or filesystem uids."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines())
        if str(uid) in fields["Uid"].split() and not fields["State"].strip().startswith("Z"):
            pids.append(int(pid))
    return pids


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_programs_pass(name):
    assert run_program(CORRECT[name]) == Outcome(True, "passed")


def test_a_failing_assert_fails():
    assert run_program(CORRECT["recursion, classes, generators"] + "assert depth(2) == 3\n") == Outcome(False, "failed")


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_program_cannot_forge_a_pass(name):
    assert not run_program(LEAK + FORGERIES[name] + DONE).passed


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_routes_to_the_marker_and_to_new_processes_are_refused(name):
    assert run_program(REFUSED[name]) == Outcome(False, "failed")


def test_run_many_keeps_order():
    assert [o.passed for o in run_many(["assert True", "assert False", "pass"], workers=2)] == [True, False, True]


@pytest.mark.parametrize("program", ["while True:\n    pass", "import time\ntime.sleep(60)"])
def test_a_slow_program_times_out(program):
    start = time.monotonic()
    assert run_program(program, timeout=1) == Outcome(False, "timeout")
    assert time.monotonic() - start < 5


def test_no_process_outlives_the_run():
    token = f"qs-escape-{uuid.uuid4().hex}"
    run_program(dedent(f"""
        import os, time
        ready, tell = os.pipe()
        if os.fork() == 0:
            os.setsid()
            keep = open("/tmp/{token}", "w")
            os.write(tell, b"x")
            time.sleep(60)
            os._exit(0)
        os.read(ready, 1)
        """))
    survivors = _fd_holders(token)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert survivors == []


@needs_root
def test_every_process_of_the_run_uid_is_killed():
    """The uid kill on its own (the audit hook refuses fork first): a grandchild in a session of its own dies too."""
    with sandbox._run_uid() as uid:
        proc = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                                 "/bin/sh", "-c", "setsid sleep 60 & sleep 60"], start_new_session=True)
        deadline = time.monotonic() + 5
        while len(_uid_processes(uid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(_uid_processes(uid)) == 3  # sh and both sleeps
        sandbox._reap(proc, uid)
        time.sleep(0.1)  # the killed processes finish exiting
        assert _uid_processes(uid) == []


@needs_root
def test_scratch_files_do_not_persist():
    token = f"qs-persist-{uuid.uuid4().hex}"
    places = [Path(d) / token for d in ("/tmp", "/var/tmp", "/dev/shm")]
    program = dedent(f"""
        for path in {[str(p) for p in places]!r}:
            try:
                open(path, "w").write("x")
            except OSError:
                pass
        assert open({str(places[0])!r}).read() == "x"
        """)
    try:
        assert run_program(program).passed
        assert [p for p in places if p.exists()] == []
    finally:
        for p in places:
            p.unlink(missing_ok=True)


def test_a_stdout_flood_fails_without_growing_the_parent():
    """In a fresh process, so that the peak RSS before the flood is that process's own small footprint."""
    proc = subprocess.run([sys.executable, "-c", FLOOD_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert not result["passed"]
    assert result["growth"] < FLOOD_PEAK_BYTES
    assert result["seconds"] < FLOOD_SECONDS
