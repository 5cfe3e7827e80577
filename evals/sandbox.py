"""Run untrusted generated code in a separate process that can neither fake a pass nor outlive or outgrow its run.

Passing means the trusted runner (RUNNER below) printed a secret marker after the program ran to its end. The
marker is never in the program's source or code objects: it arrives on an inherited socket that the runner
reads and closes before the program starts, and then sits only in the runner's frame. An audit hook, which cannot be
removed, refuses every route to that frame (sys._getframe, traceback, generator and signal-handler frames, trace
and profile functions, gc, ctypes, hand-made code objects), process creation, sockets and /proc; the process is
made undumpable so that /proc/self/mem is closed to it. A program that exits early, raises SystemExit, crashes or
is killed counts as a failure.

As root (as in CI), each run also gets a uid of its own, private mount, network and IPC namespaces with every
mount read-only and fresh size-capped tmpfs on /tmp and /dev/shm, and afterwards every process of that uid is
killed, so a fork that calls setsid cannot outlive the run. Where namespaces are refused, what the uid left in
the shared scratch directories is removed instead; without root the run keeps its limits, the hook and a
process-group kill. Stdout goes to an unlinked file capped by RLIMIT_FSIZE, and only its tail is read back.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

TIMEOUT_S = 10.0
CPU_S = 8
MEMORY_BYTES = 1 << 30
MAX_PROCESSES = 64              # per run's uid; threads count too
MAX_FILE_BYTES = 16 << 20       # any one file the program writes, its stdout included
SCRATCH_BYTES = 64 << 20        # each private tmpfs
TAIL_BYTES = 4096               # how much of stdout is read back to look for the marker
UID_BASE = 1 << 30              # a run's uid: UID_BASE + (pid % PID_SLOTS) * RUNS_PER_PROCESS + slot, below 2**31
PID_SLOTS = 1 << 22             # Linux's largest pid_max
RUNS_PER_PROCESS = 256          # concurrent runs one process can hold
SHARED_SCRATCH = ("/tmp", "/var/tmp", "/dev/shm")
KILL_ALL = ["/bin/sh", "-c", "kill -9 -1"]  # run as the run's uid: kill(-1) reaches exactly its processes
CHECK_PROGRAM = "import collections, fractions, re\nassert fractions.Fraction(1, 3) * 3 == 1\n"

# The child's program, run by `python -I -S -c RUNNER uid channel cpu memory file_bytes processes scratch_bytes`
# (uid 0: stay the current user). Its globals hold nothing secret: the marker lives only in main()'s frame.
RUNNER = r'''
import _imp, _io, _signal, _thread, gc, os, resource, sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
SCRATCH = (b"/tmp", b"/dev/shm")
PYC_HEADER_BYTES = 16
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
PATH_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})
REFUSED_EVENTS = frozenset({
    "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile", "sys.addaudithook",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__", "marshal.load",
    "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen",
    "os.kill", "os.killpg", "signal.pthread_kill", "socket.__new__"})
REFUSED_MODULES = frozenset({"ctypes", "_ctypes", "_ctypes_test", "_posixsubprocess", "_xxsubinterpreters",
                             "_xxinterpchannels", "_xxtestfuzz"})


def refuse(*args, **kwargs):
    raise PermissionError("the sandbox does not allow this")


def load_libc():
    """unshare, mount and prctl from libc through _ctypes alone (the ctypes package costs 3 ms more); None if absent."""
    try:
        import _ctypes
    except ImportError:
        return None
    class Int(_ctypes._SimpleCData):
        _type_ = "i"
    class Function(_ctypes.CFuncPtr):
        _flags_, _restype_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO, Int
    class Libc:
        _handle = _ctypes.dlopen(None)
    libc = Libc()
    for name in ("unshare", "mount", "prctl"):
        setattr(libc, name, Function((name, Libc)))
    libc.errno = _ctypes.get_errno
    return libc


def isolate(libc, scratch_bytes):
    """As root: private namespaces, every mount read-only, tmpfs scratch, Python's tree reachable. False if refused."""
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC) != 0:
        return False  # e.g. a container without CAP_SYS_ADMIN: the parent sweeps the shared scratch instead
    def mount(source, target, fstype, flags, data=None):
        if libc.mount(source, target, fstype, flags, data) != 0:
            raise OSError(libc.errno(), f"mount {target!r}")
    mount(None, b"/", None, MS_REC | MS_PRIVATE)
    with open("/proc/self/mountinfo", "rb") as f:
        targets = [line.split()[4].decode("unicode_escape").encode("latin-1") for line in f]
    for target in targets:
        try:
            kept = os.statvfs(target).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)
        except OSError:
            pass  # a mount hidden under another one
    tmpfs = f"size={scratch_bytes},nr_inodes=4096,mode=1777".encode()
    for target in SCRATCH:
        if os.path.isdir(target):
            mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, tmpfs)
    prefix = os.path.realpath(sys.base_prefix)
    parts = prefix.split("/")
    closed = [a for a in ("/".join(parts[:i]) for i in range(2, len(parts))) if not os.stat(a).st_mode & 0o001]
    if closed:  # e.g. Python under /root: cover the ancestor with a tmpfs that holds just Python's tree
        fd = os.open(prefix, os.O_PATH)
        mount(b"tmpfs", closed[0].encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=755")
        os.makedirs(prefix)
        mount(f"/proc/self/fd/{fd}".encode(), prefix.encode(), None, MS_BIND | MS_REC)
        os.close(fd)
    os.chdir("/tmp")
    os.environ["HOME"] = os.environ["TMPDIR"] = "/tmp"
    return True


def harden(uid, scratch_bytes):
    """Isolate and drop to uid (when root), then no new privileges and not dumpable. True if isolated."""
    libc = load_libc()
    isolated = False
    if uid:
        isolated = libc is not None and isolate(libc, scratch_bytes)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        try:
            os.kill(-1, 9)  # whatever an earlier holder of this uid left behind
        except ProcessLookupError:
            pass
    if libc is not None:
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    sys.modules.pop("_ctypes", None)
    return isolated


def preload():
    """Import, while still privileged, what the runner and the hook need: every builtin module, so that disarm()
    leaves no pristine copy to make, and types, which reads a frame as it loads."""
    for name in sys.builtin_module_names:
        if not (name in REFUSED_MODULES or name.startswith("_test")):
            __import__(name)
    __import__("_posixsubprocess")
    __import__("types")


def disarm():
    """Replace the few C functions that hand out frames or processes without an audit event."""
    _signal.signal = gc.set_debug = sys.modules["_posixsubprocess"].fork_exec = _imp.create_builtin = refuse


def make_guard():
    """The audit hook. What it consults is bound here, beyond a program that rewrites the runner's globals or builtins.
    A .pyc may be unmarshalled only with the bytes of the standard-library file just opened."""
    refused_events, frame_attributes, path_events = REFUSED_EVENTS, FRAME_ATTRIBUTES, PATH_EVENTS
    refused_modules, prefixes = REFUSED_MODULES, (sys.base_prefix + "/", os.path.realpath(sys.base_prefix) + "/")
    realpath, fspath, fsdecode, open_file = os.path.realpath, os.fspath, os.fsdecode, _io.open
    get_ident, exact, type_of, is_instance, view = _thread.get_ident, str.__str__, type, isinstance, memoryview
    string, integer, header = str, int, PYC_HEADER_BYTES
    expected, reading = {}, set()

    def guard(event, args):
        if event in refused_events or event.startswith("ctypes."):
            raise PermissionError(f"the sandbox does not allow {event}")
        if event == "sys._getframe":
            raise ValueError("the sandbox does not allow sys._getframe")  # what namedtuple and enum tolerate
        if event == "object.__getattr__" and args[1] in frame_attributes:
            raise PermissionError(f"the sandbox does not allow .{args[1]}")
        if event == "import" and (exact(args[0]) in refused_modules or exact(args[0]).startswith("_test")):
            raise PermissionError(f"the sandbox does not allow importing {args[0]}")
        if event in path_events and args[0] is not None and not is_instance(args[0], integer):
            name = args[0]
            if not (type_of(name) is string and name.startswith(prefixes) and "/.." not in name):
                path = fsdecode(realpath(fspath(name)))
                if path == "/proc" or path.startswith("/proc/"):  # undumpable is the wall, this a second one
                    raise PermissionError("the sandbox does not allow /proc")
            elif event == "open" and name.endswith(".pyc") and get_ident() not in reading:
                reading.add(get_ident())
                try:
                    with open_file(name, "rb") as f:
                        expected[get_ident()] = f.read()[header:]
                finally:
                    reading.discard(get_ident())
        if event == "marshal.loads" and expected.pop(get_ident(), None) != view(args[0]).tobytes():
            raise PermissionError("the sandbox does not allow marshal.loads")
    return guard


def main():
    uid, channel, cpu, memory, file_bytes, processes, scratch_bytes = map(int, sys.argv[1:])
    source = sys.stdin.buffer.read()
    marker = os.read(channel, 4096)
    for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_FSIZE, file_bytes), (resource.RLIMIT_NPROC, processes)):
        resource.setrlimit(limit, (value, value))
    preload()
    isolated = harden(uid, scratch_bytes)
    os.write(channel, b"1" if isolated else b"0")
    os.close(channel)  # before the program starts: it can neither read the marker nor answer for the runner
    disarm()
    sys.addaudithook(make_guard())
    module = type(sys)("__main__")
    sys.modules["__main__"], sys.argv = module, ["-"]
    write, exit = os.write, os._exit
    try:
        exec(compile(source, "<stdin>", "exec", dont_inherit=True), module.__dict__)
    except BaseException:
        exit(1)
    write(1, marker + b"\n")
    exit(0)


main()
'''


@dataclass
class Outcome:
    passed: bool
    reason: str              # "passed", "failed", "timeout"


_FREE_SLOTS: queue.SimpleQueue[int] = queue.SimpleQueue()
for _slot in range(RUNS_PER_PROCESS):
    _FREE_SLOTS.put(_slot)


@contextmanager
def _run_uid() -> Iterator[int | None]:
    """A uid no other live run has (None when not root): this process's range, one of its free slots."""
    if os.geteuid() != 0:
        yield None
        return
    slot = _FREE_SLOTS.get()
    try:
        yield UID_BASE + (os.getpid() % PID_SLOTS) * RUNS_PER_PROCESS + slot
    finally:
        _FREE_SLOTS.put(slot)


def _reap(proc: subprocess.Popen, uid: int | None) -> None:
    """SIGKILL every process of the run's uid (forks that called setsid included), else the run's session."""
    if uid is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    elif setpriv := shutil.which("setpriv"):  # vfork-friendly, so cheap in a parent holding a model
        subprocess.run([setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *KILL_ALL],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        subprocess.run(KILL_ALL, user=uid, group=uid, extra_groups=[],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait()


def _sweep(uid: int) -> None:
    """Remove what the uid left in the shared scratch directories (for a run that had no private ones)."""
    for directory in SHARED_SCRATCH:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass


def _tail(f) -> bytes:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - TAIL_BYTES))
    return f.read()


def run_program(program: str, timeout: float = TIMEOUT_S) -> Outcome:
    marker = uuid.uuid4().hex.encode()
    with _run_uid() as uid, tempfile.TemporaryDirectory(prefix="qs-sandbox-") as home, \
            tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as out:
        source.write(program.encode())
        source.seek(0)
        if uid is not None:
            os.chown(home, uid, uid)
        ours, theirs = socket.socketpair()  # the marker goes out, "isolated?" comes back, both before the program
        limits = (CPU_S, MEMORY_BYTES, MAX_FILE_BYTES, MAX_PROCESSES, SCRATCH_BYTES)
        command = [sys.executable, "-I", "-S", "-c", RUNNER, *map(str, (uid or 0, theirs.fileno(), *limits))]
        start = time.monotonic()
        with ours, theirs:
            ours.sendall(marker)
            proc = subprocess.Popen(command, stdin=source, stdout=out, stderr=subprocess.DEVNULL, cwd=home,
                                    pass_fds=(theirs.fileno(),), start_new_session=True,
                                    env={"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home})
            theirs.close()
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            try:
                proc.wait()
                elapsed = time.monotonic() - start
            finally:
                timer.cancel()
                _reap(proc, uid)
            ours.setblocking(False)
            try:
                isolated = ours.recv(1) == b"1"
            except BlockingIOError:
                isolated = False
        if uid is not None and not isolated:
            _sweep(uid)
        if elapsed >= timeout:
            return Outcome(False, "timeout")
        passed = proc.returncode == 0 and marker in _tail(out)
        return Outcome(passed, "passed" if passed else "failed")


def run_many(programs: list[str], workers: int, progress=None) -> list[Outcome]:
    if programs and not run_program(CHECK_PROGRAM).passed:
        raise RuntimeError("the sandbox failed a known-correct program; when running as root, check that an "
                           f"unprivileged user can read Python under {sys.base_prefix}")
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = []
        for outcome in pool.map(run_program, programs):
            results.append(outcome)
            if progress:
                progress.update(1)
        return results
