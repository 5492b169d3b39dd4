"""The sandbox every autograding kernel runs in: its limits, the zygote that forks it, a memory watchdog.

A kernel is forked, warm, by this grading process's zygote (zygote.py: TensorFlow and the rest
imported once), into new mount, PID, network, IPC, UTS and cgroup namespaces. It sees a read-only
system (/usr, Python, the virtual environment, the helper package `dcv` and its data cache) and one
writable folder, a copy of its submission in a tmpfs of bounded size (like its /tmp); nothing of the
course folder (gradebook, other students, release, source), nor solutions/. Its sockets' folder, on
the grader's disk, is taken back once it has started (`seal`), so it writes nothing there. It runs
under a user id of its own with no capabilities, no network (not even a loopback), rlimits on
memory, CPU time, processes and file size; a watchdog kills it when its processes together use more
memory than allowed or the notebook runs past its wall-time limit.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import protocol_version
from traitlets import Bool, Float, Integer, List, Type, Unicode, default
from traitlets.config import Configurable

MB = 1024 * 1024
RECONNECT_MS = 10  # how often the grader's sockets retry connecting to a kernel that is still starting


class Sandbox(Configurable):
    """Limits and read-only paths of the autograding sandbox (configure as `c.Sandbox.<name>`)."""

    enabled = Bool(True, help="Run kernels in the sandbox; False is `--unsafe-no-sandbox`.").tag(config=True)
    memory_mb = Integer(4096, help="Memory of a notebook: resident memory of all its processes together "
                                   "(proportional set size, watched twice a second; the kernel is killed "
                                   "beyond it).").tag(config=True)
    address_space_mb = Integer(16384, help="Address space of each process (RLIMIT_AS): a huge allocation "
                                           "fails at once with MemoryError. TensorFlow reserves far more "
                                           "than it uses: 4096 breaks its convolutions.").tag(config=True)
    cpu_seconds = Integer(1800, help="CPU time of the kernel process (RLIMIT_CPU).").tag(config=True)
    cell_timeout = Integer(600, help="Wall time of one cell, in seconds; it is then interrupted.").tag(config=True)
    notebook_timeout = Integer(1800, help="Wall time of one notebook, in seconds; its kernel is then "
                                          "killed and the cells not run score 0.").tag(config=True)
    interrupt_grace = Integer(30, help="Seconds a cell interrupted at its time limit has to stop; one that "
                                       "ignores the interrupt has its kernel killed (the cells after it score 0) "
                                       "instead of holding its grader until the notebook's limit.").tag(config=True)
    processes = Integer(512, help="Processes and threads of one notebook (RLIMIT_NPROC, its own user id)."
                        ).tag(config=True)
    output_mb = Float(5.0, help="Output a notebook may produce (streams, results, errors); more is "
                                "dropped.").tag(config=True)
    file_mb = Integer(1024, help="Size of any file the notebook writes (RLIMIT_FSIZE).").tag(config=True)
    tmp_mb = Integer(256, help="Size of the notebook's private /tmp (a tmpfs).").tag(config=True)
    work_mb = Integer(512, help="What the notebook may write in its folder (a tmpfs holding a copy of the "
                                "submission, which does not count): beyond it, 'No space left on device'."
                      ).tag(config=True)
    read_only = List(Unicode(), help="More host paths the kernel may read (bound read-only at the same "
                                     "place), e.g. a data cache.").tag(config=True)
    uid_base = Integer(200000, help="Kernels run as user id uid_base + slot (no account needed).").tag(config=True)

    def kernel_paths(self) -> list[str]:
        """Host paths a Python kernel needs: the interpreter, the venv, the helper package, its cache."""
        import dcv

        paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
                 str(Path(dcv.__file__).resolve().parent), *self.read_only}
        cache = os.environ.get("DCV_CACHE_DIR") or str(Path.home() / ".cache" / "dcv")
        keras = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
        paths |= {p for p in (cache, keras) if os.path.isdir(p)}
        return sorted(p for p in paths if os.path.exists(p))

    def env(self, workdir: str) -> dict[str, str]:
        """The kernel's whole environment (nothing else of the grader's is passed on). NumPy asks for no
        transparent huge pages: faulting them in made the zygote's scaling of MNIST take 2.5 s, not 0.3."""
        cache = os.environ.get("DCV_CACHE_DIR") or str(Path.home() / ".cache" / "dcv")
        keras = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
        return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8",
                "TMPDIR": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib", "MPLBACKEND": "agg",
                "TF_CPP_MIN_LOG_LEVEL": "3", "NBGRADER_EXECUTION": "autograde", "DCV_CACHE_DIR": cache,
                "KERAS_HOME": keras, "PYDEVD_DISABLE_FILE_VALIDATION": "1", "PYTHONDONTWRITEBYTECODE": "1",
                "MALLOC_ARENA_MAX": "2", "NUMPY_MADVISE_HUGEPAGE": "0"}

    def spec(self, workdir: str, runtime: str, uid: int, connection_file: str, mplconfig: str) -> dict:
        """What the zygote needs to start one kernel (see zygote.py): paths, user id, limits, environment
        (`mplconfig`: Matplotlib's folder as the zygote imported it, made again in the kernel's /tmp)."""
        env = {**self.env(workdir), "MPLCONFIGDIR": mplconfig}
        if not self.enabled:  # no /tmp of its own: its temporary files go with the submission's folder
            env["TMPDIR"] = os.path.join(os.path.dirname(runtime), "tmp")
            os.makedirs(env["TMPDIR"], exist_ok=True)
        return {"isolate": self.enabled, "root": os.path.join(os.path.dirname(runtime), "root"),
                "read_only": self.kernel_paths(), "writable": [runtime], "workdir": workdir,
                "work_bytes": self.work_mb * MB, "uid": uid, "env": env, "tmp_bytes": self.tmp_mb * MB,
                "tmp_folders": [mplconfig],
                "limits": {"address_space": self.address_space_mb * MB, "cpu": self.cpu_seconds,
                           "processes": self.processes, "file": self.file_mb * MB},
                "argv": ["-f", connection_file, "--HistoryManager.enabled=False"]}  # no history thread, no file


class WarmProcess:
    """The kernel's handle, as jupyter_client uses a Popen: its pid, poll/wait (asked of the zygote), signals."""

    def __init__(self, pid: int, zygote: Zygote):
        self.pid, self.zygote, self.returncode = pid, zygote, None
        self.stdin = self.stdout = self.stderr = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.request({"op": "poll", "pid": self.pid})["status"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def start_zygote(argv: list[str], warm: tuple[str, ...], pass_fds: tuple[int, ...] = (),
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start `python -m autograder.zygote <argv> <warm>` in a folder of its own (its log, Matplotlib's
    configuration as it imports it) with the kernels' environment (or `env`); return it and its folder."""
    folder = tempfile.mkdtemp(prefix="dcv-zygote-")
    os.chmod(folder, 0o755)
    env = {**(Sandbox().env(folder) if env is None else env), "MPLCONFIGDIR": os.path.join(folder, "matplotlib"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with open(os.path.join(folder, "zygote.log"), "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "autograder.zygote", *argv, json.dumps(list(warm))],
                                   pass_fds=pass_fds, env=env, cwd=folder, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT)
    return process, folder


class Zygote:
    """The grader's end of `python -m autograder.zygote`: one per grading process, started on first use;
    or a copy of the shared one at $DCV_ZYGOTE_SOCKET (ZygoteServer) when that one imported `warm`."""

    def __init__(self, warm: tuple[str, ...] = ()):
        # One request at a time, from any thread of this process or of worker processes forked from it
        # (executors.run starts the zygote before forking its local workers, which share it).
        self.lock = multiprocessing.get_context("fork").Lock()
        self.used = multiprocessing.get_context("fork").Value("b", 0, lock=False)  # set by any of those
        self.owner = os.getpid()
        self.process: subprocess.Popen | None = None
        self.folder: str | None = None
        shared = os.environ.get("DCV_ZYGOTE_SOCKET")
        if shared and self.connect(shared, warm):
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process, self.folder = start_zygote([str(theirs.fileno())], warm, pass_fds=(theirs.fileno(),))
        theirs.close()
        self.sock = ours
        self.mplconfig = os.path.join(self.folder, "matplotlib")
        self.log = os.path.join(self.folder, "zygote.log")

    def connect(self, path: str, warm: tuple[str, ...]) -> bool:
        """Be served by a copy of the shared zygote at `path`, if it imported all of `warm`."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(path)
            hello = json.loads(sock.recv(1 << 16))
        except (OSError, ValueError):
            sock.close()
            return False
        if not set(warm) <= set(hello["warm"]):
            sock.close()
            return False
        self.sock, self.mplconfig, self.log = sock, hello["mplconfig"], hello["log"]
        return True

    def request(self, message: dict, fds: list[int] = ()) -> dict:
        """Send one request, return its reply (one at a time: grading threads share the zygote)."""
        with self.lock:  # the first reply waits until the zygote has imported what it warms
            self.used.value = 1
            try:
                socket.send_fds(self.sock, [json.dumps(message).encode()], list(fds))
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                said = open(self.log, errors="replace").read().strip().splitlines()
                raise RuntimeError("the kernel zygote is not running" + (f": {said[-1][:300]}" if said else ""))
            return json.loads(data)

    def spawn(self, spec: dict, log_fd: int) -> WarmProcess:
        """Fork a kernel of `spec`, its console output going to `log_fd`."""
        return WarmProcess(self.request({"op": "spawn", "spec": spec}, [log_fd])["pid"], self)

    def close(self) -> None:
        if os.getpid() != self.owner:  # a forked worker: the zygote is its parent's to close
            return
        self.sock.close()  # the zygote (or the shared one's copy) kills its kernels and exits
        if self.process is None:
            return
        if not self.used.value:  # started early and never asked (nothing to grade): not worth its imports
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


class ZygoteServer:
    """One warm zygote for many grading commands (`python -m autograder.zygote --listen`): set
    $DCV_ZYGOTE_SOCKET to `path` and each command's Zygote is a copy of it, forked for that command,
    instead of a process that imports TensorFlow again. It stops with the process that started it.
    (With `env`, the zygote imports in that environment instead of the kernels': scripts/warm_kernel.py.)"""

    def __init__(self, warm: tuple[str, ...], env: dict[str, str] | None = None):
        self.socket_folder = tempfile.mkdtemp(prefix="dcv-zygote-socket-")  # 0700: root's alone
        self.path = os.path.join(self.socket_folder, "zygote.sock")
        self.process, self.folder = start_zygote(["--listen", self.path], warm, env=env)
        deadline = time.monotonic() + 300
        while not os.path.exists(self.path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                said = open(os.path.join(self.folder, "zygote.log"), errors="replace").read().strip()
                self.close()
                raise RuntimeError(f"the shared zygote did not start: {said[-300:]}")
            time.sleep(0.1)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self.socket_folder, ignore_errors=True)


_ZYGOTES: dict[tuple[str, ...], Zygote] = {}
_ZYGOTE_LOCK = threading.Lock()


def zygote(warm: tuple[str, ...] = ()) -> Zygote:
    """This process's zygote for kernels that import `warm`, started on first use (worker processes forked
    after that share it)."""
    with _ZYGOTE_LOCK:
        if warm not in _ZYGOTES:
            _ZYGOTES[warm] = Zygote(warm)
            atexit.register(_ZYGOTES[warm].close)
        return _ZYGOTES[warm]


def warm_modules(cells: Iterable[dict]) -> tuple[str, ...]:
    """The modules an assignment's code cells (as in an .ipynb) import that a zygote may import beforehand,
    and the calls it may make (zygote.WARMABLE); the cells are the instructor's source, never a student's."""
    import ast

    from .zygote import WARMABLE

    found: set[str] = set()
    called: set[str] = set()
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source") or ""
        try:
            tree = ast.parse(source if isinstance(source, str) else "".join(source))
        except (SyntaxError, ValueError, TypeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
                called.add(node.func.id if isinstance(node.func, ast.Name) else node.func.attr)

    def wanted(entry: str) -> bool:
        if entry.endswith("()"):  # a call the notebooks make, from a module they import
            module, function = entry[:-2].rsplit(".", 1)
            return function in called and module in found
        return entry in found or (entry == "matplotlib.pyplot" and "matplotlib" in found)

    return tuple(m for m in WARMABLE if wanted(m))


def unavailable() -> str | None:
    """Why the sandbox cannot be built on this machine, or None when it can."""
    if sys.platform != "linux":
        return "the sandbox needs Linux namespaces"
    if os.geteuid() != 0:
        return ("the sandbox must run as root here, to give each kernel a user id of its own (the process "
                "limit counts per user) and namespaces of its own")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        work = os.path.join(tmp, "work")
        os.mkdir(work)
        os.chown(work, 200000 - 1, 200000 - 1)
        spec = Sandbox().spec(work, work, 200000 - 1, os.path.join(work, "kernel.json"), "/tmp/matplotlib")
        probe = [sys.executable, "-m", "autograder.zygote", "--probe", json.dumps(spec)]
        try:
            done = subprocess.run(probe, capture_output=True, text=True, timeout=60,
                                  cwd=str(Path(__file__).resolve().parents[1]))
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the sandbox failed to start: {exc}"
    if done.returncode:
        said = done.stderr.strip().splitlines()
        return f"the sandbox cannot be built here: {said[-1] if said else done.returncode}"
    return None


class SandboxedKernelClient(AsyncKernelClient):
    """jupyter_client's client, ready once the kernel has answered on the shell and IOPub channels."""

    @default("context")
    def _context_default(self):
        """Its own ZeroMQ context, whose sockets retry connecting every 10 ms, not 100: they connect before the
        kernel's sockets exist, and the default cost each notebook 0.1-0.15 s of waiting."""
        import zmq

        context = super()._context_default()
        context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
        return context

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        """Wait for the kernel's info reply and an IOPub message (proof that IOPub is connected).

        jupyter_client's own version then waits until IOPub has been quiet for 0.2 s, which every
        notebook would pay: nbclient reads only the messages that answer its own requests anyway."""
        from queue import Empty

        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while True:
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
            except Empty:
                reply = None
            if reply is not None and reply["msg_type"] == "kernel_info_reply":
                try:
                    await self.iopub_channel.get_msg(timeout=0.2)
                except Empty:
                    pass  # not connected yet: ask again
                else:
                    major = int(reply["content"]["protocol_version"].split(".")[0])
                    if major != int(protocol_version.split(".")[0]):
                        self.session.adapt_version = major
                    return
            if not await self.is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel is forked by the zygote into the sandbox, talking over IPC sockets."""

    client_factory = Type(SandboxedKernelClient, klass=AsyncKernelClient)

    def __init__(self, *, sandbox: Sandbox, workdir: str, runtime: str, uid: int, warm: tuple[str, ...] = (),
                 **kwargs):
        super().__init__(transport="ipc", connection_file=os.path.join(runtime, "kernel.json"), **kwargs)
        self.sandbox, self.workdir, self.runtime, self.uid, self.warm = sandbox, workdir, runtime, uid, warm

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw):
        """Have the zygote fork the kernel, its console output going to `runtime`/../kernel.log (not ours)."""
        warm = zygote(self.warm)
        spec = self.sandbox.spec(self.workdir, self.runtime, self.uid, self.connection_file, warm.mplconfig)
        with open(os.path.join(os.path.dirname(self.runtime), "kernel.log"), "ab") as log:
            process = warm.spawn(spec, log.fileno())
        provisioner = self.provisioner
        provisioner.process, provisioner.pid, provisioner.pgid = process, process.pid, None
        provisioner.cwd = self.workdir
        self._reconcile_connection_info(provisioner.connection_info)

    def write_connection_file(self, **kwargs) -> None:
        """Write the connection file, readable by the kernel's own user."""
        super().write_connection_file(**kwargs)
        if self.sandbox.enabled:
            os.chown(self.connection_file, self.uid, self.uid)

    def seal(self) -> None:
        """Once the kernel has made its sockets (it answered), take its runtime folder and connection file
        back: it may then write nothing on the grader's disk (its own folder and /tmp are tmpfs)."""
        if self.sandbox.enabled:
            for path in (self.connection_file, self.runtime):
                os.chown(path, 0, 0)

    async def _async_interrupt_kernel(self) -> None:
        """Interrupt by a message: a signal would reach the process outside the sandbox, not the kernel."""
        if self.kernel_spec is not None:
            self.kernel_spec.interrupt_mode = "message"
        await super()._async_interrupt_kernel()

    interrupt_kernel = _async_interrupt_kernel

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        """Kill the kernel at once, its namespaces and tmpfs with it: once its last cell has run, nothing it could
        still do counts (an interrupt, then a polite shutdown request and its wait, took 50 ms a notebook).
        Sandboxed, its first process is sent SIGTERM, which it passes on to PID 1: PID 1 kills the kernel, reaps it
        and exits, emptying the namespace (zygote.enter), so no process of the kernel outlives this call."""
        import asyncio

        self.shutting_down = True
        self.stop_restarter()
        if self.has_kernel and self.sandbox.enabled:
            await self.provisioner.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._async_wait(), timeout=5)
            except TimeoutError:
                pass  # killed below
        await self._async_kill_kernel()  # (nothing to do once it is gone)
        await self._async_cleanup_resources(restart=restart)

    shutdown_kernel = _async_shutdown_kernel

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        """Wait for the killed kernel to be gone, looking every 10 ms instead of every 100."""
        await super()._async_wait(0.01)


class Watchdog(threading.Thread):
    """Kills a kernel whose processes use too much memory together, or that runs past a wall time."""

    def __init__(self, pid_of, uid: int | None, memory_bytes: int, seconds: float):
        super().__init__(daemon=True)
        self.pid_of, self.uid, self.memory_bytes = pid_of, uid, memory_bytes
        self.deadline = time.monotonic() + seconds
        self.reason: str | None = None
        self.peak = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            pid = self.pid_of()
            if pid is None:
                continue
            if time.monotonic() > self.deadline:
                self.kill(pid, "notebook time limit")
                return
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            used = 0
            # Proportional set size: pages shared after fork() are not counted twice, and the pages the
            # zygote's imports share with every kernel count once, split among them. Sandboxed, only the
            # kernel's own user's processes count (not the two root processes that hold its namespaces).
            for p in procs:
                try:
                    if self.uid is None or p.uids().real == self.uid:
                        used += p.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, used)
            if used > self.memory_bytes:
                self.kill(pid, f"memory limit ({self.memory_bytes // MB} MB for all its processes)")
                return

    def kill(self, pid: int, reason: str) -> None:
        """Kill the kernel (its PID namespace goes with it) and say why."""
        self.reason = reason
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
