"""Warm kernels: a process that imports Keras once, then forks each autograding kernel, sandboxed.

`python -m autograder.zygote FD MODULES` is started by the grader (sandbox.Zygote), one per grading
process and assignment. It imports what the assignment's notebooks import (TensorFlow and Keras,
Matplotlib, the helper package; IPython's kernel, its debugger and NumPy always) before any student code
exists, then serves requests on the Unix socket FD: `spawn` forks a kernel, `poll` reports whether
one has exited. A kernel therefore starts in a fraction of a second
instead of the ~6 CPU-seconds of importing TensorFlow. The zygote never reads a gradebook or a
submission: a kernel inherits nothing of other students.

Each kernel is four processes. The first (in the grader's namespaces, root) enters new mount,
PID, network, IPC, UTS and cgroup namespaces and waits; the second is PID 1 there: it builds the
kernel's view of the file system (a read-only system, a copy of its submission's folder in a tmpfs,
private /tmp, /dev/shm and a read-only /proc; nothing else) and reaps orphans; the third copies the kernel's
console output to its log, up to a limit; the fourth is the kernel: rlimits set, every
capability dropped, its own user id, no new privileges, an environment of its own, no folder
it can write on `sys.path` (a module the notebook writes, whose code the grader's reading of the
cells never sees, cannot be imported), and no connect(2) for it or anything it starts (a seccomp
filter: a process it starts cannot listen to its sockets). Killing the
first kills the others (parent-death signals; the PID namespace dies with its PID 1). SIGTERM to the first
(the grader's way to stop a kernel) goes on to PID 1, which kills the kernel, reaps it (so that its CPU time
counts: processes killed with their namespace are not counted) and exits, emptying the namespace before the
first exits. Where `isolate`
is false (`--unsafe-no-sandbox`), the kernel runs as the grader's user with no namespace at all.
`python -m autograder.zygote --probe` checks that this machine can build the sandbox (root, Linux
namespaces), without importing Keras. `python -m autograder.zygote --listen PATH MODULES` serves many
grading commands, one after another or at once, from one warm zygote: each that connects to the
socket PATH (root's alone) is served by a copy forked for it (sandbox.ZygoteServer; the test suite's
grading commands share one this way instead of importing TensorFlow once each).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import sys
import threading
import time

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "fonts", "localtime", "alternatives", "mime.types", "ssl")
# What a zygote may import before any kernel exists (sandbox.warm_modules picks, per assignment, those
# that its notebooks import); IPython's kernel, its debugger and NumPy always. An entry ending in "()" is a
# call, made in a thread beside the imports when the notebooks make it: it fills its module's per-process
# cache, which every kernel forked afterwards shares (read-only) instead of building its own (MNIST
# scaled: 219 MB).
WARMABLE = ("numpy", "tensorflow", "keras", "matplotlib.pyplot", "dcv.data", "dcv.grader", "dcv.images",
            "dcv.pretrained", "dcv.training", "dcv.memory", "dcv.architectures", "dcv.segmentation",
            "dcv.detection", "dcv.receptive", "dcv.style", "dcv.synthetic", "dcv.plots",
            "dcv.data.mnist_scaled()")

# A seccomp filter for the kernel and every process it starts (inherited, never removed): connect(2) fails. A
# process the notebook starts could otherwise subscribe to its kernel's IOPub socket (a file it can reach) and
# read each cell's code as the kernel announces it, the hidden tests' among them; the kernel itself only binds.
# io_uring is refused too (its connect bypasses seccomp), and so is every call of another ABI (i386's
# socketcall, x32). (audit arch, connect, io_uring_setup) per machine.
SECCOMP_NUMBERS = {"x86_64": (0xC000003E, 42, 425), "aarch64": (0xC00000B7, 203, 425)}
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_EPERM = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source or ''} on {target}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl {option}")


def _deny_connect() -> None:
    """Install SECCOMP_NUMBERS' filter in this process (after PR_SET_NO_NEW_PRIVS): connect(2) and io_uring fail
    with EPERM, here and in every process started from here."""
    if platform.machine() not in SECCOMP_NUMBERS:
        raise OSError(f"no seccomp filter for {platform.machine()}: a kernel's children could read its sockets")
    arch, connect, io_uring_setup = SECCOMP_NUMBERS[platform.machine()]
    load, jump_eq, jump_ge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    program = [(load, 0, 0, 4), (jump_eq, 1, 0, arch), (ret, 0, 0, SECCOMP_RET_EPERM),  # another ABI: refused
               (load, 0, 0, 0), (jump_ge, 3, 0, 0x40000000),  # the call's number; x32's: refused
               (jump_eq, 2, 0, connect), (jump_eq, 1, 0, io_uring_setup),
               (ret, 0, 0, SECCOMP_RET_ALLOW), (ret, 0, 0, SECCOMP_RET_EPERM)]
    filters = (_SockFilter * len(program))(*(_SockFilter(*instruction) for instruction in program))
    prog = _SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    _check(_libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog), 0, 0),
           "seccomp filter")


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


# ---------------------------------------------------------------------------------------------
# the sandbox, built by a freshly forked process (root, the grader's namespaces)


def _bind(source: str, target: str, *, read_only: bool, flags: int = MS_NOSUID | MS_NODEV) -> None:
    """Bind `source` at `target` (created), read-only or not, submounts included."""
    if os.path.isdir(source):
        os.makedirs(target, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    remount = MS_BIND | MS_REMOUNT | flags | (MS_RDONLY if read_only else 0)
    below = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].replace("\\040", " ")
            if point == target or point.startswith(target.rstrip("/") + "/"):
                below.append(point)
    for point in below or [target]:
        _mount(None, point, None, remount)


def build_root(spec: dict) -> None:
    """Make the new mount namespace's root: only the paths the kernel needs, then pivot into it."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = spec["root"]
    os.makedirs(root, 0o755, exist_ok=True)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    inside = lambda path: root + path
    for link in ("lib", "lib64", "bin", "sbin", "lib32"):
        if os.path.islink(f"/{link}"):
            os.symlink(os.readlink(f"/{link}"), inside(f"/{link}"))
        elif os.path.isdir(f"/{link}"):
            _bind(f"/{link}", inside(f"/{link}"), read_only=True)
    _bind("/usr", inside("/usr"), read_only=True)
    os.makedirs(inside("/dev"))
    _mount("tmpfs", inside("/dev"), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for private in ("/tmp", "/dev/shm"):  # first: the submission's folders may lie under /tmp
        os.makedirs(inside(private), exist_ok=True)
        _mount("tmpfs", inside(private), "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={spec['tmp_bytes']}")
    for name in ETC:
        if os.path.exists(f"/etc/{name}"):
            _bind(os.path.realpath(f"/etc/{name}"), inside(f"/etc/{name}"), read_only=True)
    for path in spec["read_only"]:
        _bind(path, inside(path), read_only=True)
    for path in spec["writable"]:
        _bind(path, inside(path), read_only=False)
    if "work_bytes" in spec:  # the submission's folder: a copy in a tmpfs, so that what the notebook writes is
        work, uid = spec["workdir"], spec["uid"]  # bounded and never reaches the grader's disk
        handed_in = sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(work) for f in files)
        os.makedirs(inside(work), 0o755, exist_ok=True)
        _mount("tmpfs", inside(work), "tmpfs", MS_NOSUID | MS_NODEV,
               f"mode=0755,uid={uid},gid={uid},size={handed_in + spec['work_bytes'] + (1 << 20)}")
        shutil.copytree(work, inside(work), symlinks=True, dirs_exist_ok=True)
        for d, dirs, files in os.walk(inside(work)):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(d, name), uid, uid)
    os.makedirs(inside("/proc"))  # read-only: `/proc/self/mem` would rewrite the kernel's objects, were it dumpable
    _mount("proc", inside("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            _bind(f"/dev/{name}", inside(f"/dev/{name}"), read_only=False, flags=MS_NOSUID | MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, inside(f"/dev/{name}"))
    for folder in spec.get("tmp_folders", []):  # e.g. Matplotlib's configuration folder, as imported
        os.makedirs(inside(folder), 0o700, exist_ok=True)
        os.chown(inside(folder), spec["uid"], spec["uid"])
    os.chdir(root)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount of the old root")
    os.chdir("/")
    _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    socket.sethostname(spec.get("hostname", "sandbox"))


def confine(spec: dict) -> None:
    """Limits, no capability, the kernel's own user id, no new privileges, not traceable, no connect(2) (in the
    kernel)."""
    limits = spec["limits"]
    for name, value in (("RLIMIT_AS", limits["address_space"]), ("RLIMIT_CPU", limits["cpu"]),
                        ("RLIMIT_NPROC", limits["processes"]), ("RLIMIT_FSIZE", limits["file"]),
                        ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        _prctl(PR_CAPBSET_DROP, cap)
    uid = spec["uid"]
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_DUMPABLE, 0)  # no process of its user (a child it starts) may trace it or write its memory
    _deny_connect()  # nor connect to its sockets
    status = open("/proc/self/status").read()
    effective = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:"))
    if int(effective, 16) or os.getuid() != uid or os.geteuid() != uid:
        raise OSError("capabilities or root left after dropping privileges")


def run_kernel(spec: dict) -> None:
    """Become the IPython kernel of `spec` (never returns)."""
    os.umask(0o022)
    os.chdir(spec["workdir"])
    os.environ.clear()
    os.environ.update(spec["env"])
    if "tempfile" in sys.modules:  # the zygote's imports chose its own; the kernel's $TMPDIR decides, as when fresh
        sys.modules["tempfile"].tempdir = None
    argv = spec["argv"]
    if spec.get("import_from_workdir"):  # as `python -m ipykernel_launcher` run in the notebook's folder
        sys.path.insert(0, spec["workdir"])
    else:  # a module the notebook writes (or one beside it) is never imported: its code is not the cells'
        argv = [*argv, "--IPKernelApp.ignore_cwd=True"]
    sys.argv = ["ipykernel_launcher", *argv]
    import numpy

    numpy.random.seed()  # forked: NumPy's global generator must not repeat the zygote's state
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()
    os._exit(0)


class SandboxError(Exception):
    """A step of the sandbox that this machine does not allow, said in one line."""


LOG_LIMIT = 1 << 20  # bytes of a kernel's console output kept in its kernel.log, on the grader's disk


def _log_pump() -> tuple[int, int]:
    """A pipe for the kernel's console output (fd 1 and 2: its kernel.log, which the grader quotes when a kernel
    cannot start): a process of its own, root in the sandbox, copies the first LOG_LIMIT bytes to the log and
    drops the rest, so the kernel never holds the grader's file (ipykernel keeps copies of fd 1 and 2).
    Returns the pipe's end to write to and the pump's pid."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not PID 1's
        os.close(write)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        left = LOG_LIMIT
        while chunk := os.read(read, 1 << 16):
            if left > 0:
                os.write(1, chunk[:left])
                left -= len(chunk)
        os._exit(0)
    os.close(read)
    return write, pid


def _wait_for(pid: int, seconds: float) -> None:
    """Wait until the child `pid` has exited (without reaping it), for `seconds` at most."""
    try:
        handle = os.pidfd_open(pid)
    except OSError:  # Linux before 5.3: look every 20 ms
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
            time.sleep(0.02)
        return
    select.select([handle], [], [], seconds)
    os.close(handle)


def enter(spec: dict) -> None:
    """In a fresh process (root): new namespaces, the root built, privileges dropped. Returns only in the
    process that becomes the kernel; the first waits outside, the second is PID 1, the third pumps the log."""
    if _libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP):
        raise SandboxError(f"no right to create Linux namespaces (unshare: {os.strerror(ctypes.get_errno())}; "
                           "it needs root with CAP_SYS_ADMIN)")
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid:  # stays outside, as the kernel's pid for the grader: exits with the kernel's status
        os.close(alive_r)
        signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))  # the grader's: to PID 1
        os._exit(_exit_code(os.waitpid(pid, 0)[1]))
    os.close(alive_w)
    # PID 1's SIGTERM: kill the kernel, which the loop below then reaps (its CPU time counted: the processes
    # that PID 1's exit kills are not) before PID 1 exits; the namespace is empty once that exit is done.
    kernel_pid: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: os.kill(kernel_pid[0], signal.SIGKILL) if kernel_pid else os._exit(1))
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([alive_r], [], [], 0)[0]:  # the first process died before the line above
        os._exit(1)
    os.close(alive_r)
    build_root(spec)
    console, pump = _log_pump()
    pid = os.fork()
    if pid:  # PID 1 of the namespace: reap orphans until the kernel exits, then let the log's pump finish
        kernel_pid.append(pid)
        os.close(console)
        while True:
            try:
                done, status = os.waitpid(-1, 0)
            except ChildProcessError:
                os._exit(1)
            if done == pump:
                pump = None
            if done == pid:
                if pump is not None:
                    _wait_for(pump, 1.0)  # at most: PID 1's exit kills the pump with the namespace
                os._exit(_exit_code(status))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for fd in (1, 2):
        os.dup2(console, fd)
    os.close(console)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    confine(spec)


def kernel(spec: dict, log_fd: int | None) -> None:
    """In a process just forked from the zygote: become a sandboxed kernel (never returns)."""
    os.setsid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(log_fd if log_fd is not None else null, 1)
    os.dup2(log_fd if log_fd is not None else null, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the zygote's socket above all
    try:
        if spec["isolate"]:
            enter(spec)
        run_kernel(spec)
    except BaseException as exc:  # said in the kernel's log, which the grader quotes
        print(f"sandbox: cannot start the kernel: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(70)


# ---------------------------------------------------------------------------------------------
# the server


def serve(sock: socket.socket) -> None:
    """Answer the grader's requests until it closes the socket; then kill every kernel still running.
    A kernel whose spec names a `cpu_log` file has a line `started PID` appended there when it starts, and
    `ended PID SECONDS` (its CPU seconds, `-` where unknown) once it has ended."""
    exited: dict[int, int | None] = {}
    logs: dict[int, str] = {}

    def reap(pid: int, flags: int) -> None:
        try:
            done, raw, usage = os.wait4(pid, flags)
        except ChildProcessError:
            done, raw, usage = pid, 0, None
        if not done:
            return
        exited[pid] = _exit_code(raw)
        if pid in logs:
            with open(logs.pop(pid), "a") as log:
                log.write(f"ended {pid} {'-' if usage is None else f'{usage.ru_utime + usage.ru_stime:.3f}'}\n")

    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
        except (ConnectionError, OSError):
            data, fds = b"", []
        if not data:
            break
        request = json.loads(data)
        for pid in [pid for pid, status in exited.items() if status is None]:
            reap(pid, os.WNOHANG)
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                try:
                    kernel(request["spec"], fds[0] if fds else None)
                finally:
                    os._exit(70)
            exited[pid] = None
            if request["spec"].get("cpu_log"):
                logs[pid] = request["spec"]["cpu_log"]
                with open(logs[pid], "a") as log:  # before the reply: whoever reads the log knows to wait for it
                    log.write(f"started {pid}\n")
            reply = {"pid": pid}
        else:  # poll
            reply = {"status": exited.get(request["pid"], 0)}
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps(reply).encode())
    for pid in [pid for pid, status in exited.items() if status is None]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if pid in logs:  # its CPU time is wanted: wait for it
            reap(pid, 0)


def probe() -> int:
    """Exit 0 when a sandboxed child can be built here: every step of the sandbox, then nothing."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            spec = json.loads(sys.argv[2])
            enter(spec)
            os.chdir(spec["workdir"])
            os._exit(0)
        except BaseException as exc:
            print(exc if isinstance(exc, SandboxError) else f"{type(exc).__name__}: {exc}", file=sys.stderr,
                  flush=True)
            os._exit(70)
    return _exit_code(os.waitpid(pid, 0)[1])


def listen(path: str, warm: list[str]) -> None:
    """Serve every grader that connects to the Unix socket at `path`, each by a forked copy of this
    warm zygote (which then serves it as `serve` does); first, tell it what was imported."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the server goes with whoever started it
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(16)
    hello = json.dumps({"warm": warm, "mplconfig": os.environ.get("MPLCONFIGDIR", ""),
                        "log": os.path.join(os.getcwd(), "zygote.log")}).encode()
    while True:
        connection, _ = server.accept()
        if os.fork() == 0:
            server.close()
            connection.send(hello)
            serve(connection)
            os._exit(0)
        connection.close()
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # the copies whose graders have gone
                pass
        except ChildProcessError:
            pass


def quiet_tensorflow_threads() -> bool:
    """Make TensorFlow's thread pools, in every kernel forked after this, sleep when idle rather than spin:
    two kernels at once (or one and its grader) then leave each other the cores (5% less CPU for the
    chapters). False, changing nothing, where TensorFlow's eager context has started or cannot take it."""
    try:
        from tensorflow.core.protobuf import config_pb2
        from tensorflow.python.eager import context

        eager = context.context()
        if eager._initialized:  # its thread pools exist already
            return False
        config = config_pb2.ConfigProto()
        if eager._config is not None:
            config.CopyFrom(eager._config)
        config.experimental.disable_thread_spinning = True
        eager._config = config  # what the context reads when it starts, at the kernel's first operation
        return True
    except Exception:  # (a private attribute: tests/test_sandbox.py checks that it still works)
        return False


def warm_call(entry: str) -> threading.Thread:
    """Start the warm call `entry` ("module.function()") in a thread, its module imported first: it runs while
    the zygote imports the rest (scaling MNIST, 0.3 s, beside TensorFlow's 3.5 s)."""
    import importlib

    name, function = entry[:-2].rsplit(".", 1)

    def call() -> None:
        try:  # a cache filled for the kernels; one that fails here fails in each kernel, with its message
            getattr(importlib.import_module(name), function)()
        except Exception as exc:
            print(f"warm call {entry} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    try:
        importlib.import_module(name)
    except Exception:  # reported by the call, as before
        pass
    thread = threading.Thread(target=call, name=f"warm {entry}", daemon=True)
    thread.start()
    return thread


def main() -> int:
    if sys.argv[1] == "--probe":
        return probe()
    import importlib

    warm = [m for m in json.loads(sys.argv[-1]) if m in WARMABLE]
    # ipykernel.debugger (debugpy) is what each kernel would otherwise import as it starts: 0.05 s apiece;
    # NumPy, which run_kernel imports to reseed it, 0.1 s (a fifth of a simple notebook's grading CPU).
    for module in ["ipykernel.kernelapp", "ipykernel.debugger", "numpy"]:
        importlib.import_module(module)
    calls = [warm_call(entry) for entry in warm if entry.endswith("()")]
    for module in warm:
        if not module.endswith("()"):
            importlib.import_module(module)
    for call in calls:  # no thread may be left when the zygote forks
        call.join()
    if "tensorflow" in sys.modules:
        quiet_tensorflow_threads()
    # The zygote's own folder and the autograder's (PYTHONPATH) are no kernel's business.
    ours = {os.getcwd(), "", *os.environ.get("PYTHONPATH", "").split(os.pathsep)}
    sys.path[:] = [entry for entry in sys.path if entry not in ours]
    if sys.argv[1] == "--listen":
        listen(sys.argv[2], warm)
    else:
        serve(socket.socket(fileno=int(sys.argv[1])))
    # The grader waits for this exit: skip the interpreter's clean-up, which takes a second or more
    # once TensorFlow is loaded (nothing of the zygote's needs it; the log is flushed first).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
