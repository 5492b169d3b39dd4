"""The sandbox every autograding kernel runs in: Debian's bubblewrap (`bwrap`) plus resource limits.

A kernel sees a read-only system (/usr, Python, the virtual environment, the helper package `dcv`
and its data cache) and one writable folder, its submission's private working copy; nothing of the
course folder (gradebook, other students, release, source), nor solutions/. It runs under a user id
of its own with no capabilities, in new PID, network (no interface but a dead loopback), IPC and UTS
namespaces, with rlimits on memory, CPU time, processes and file size; a watchdog kills it when its
processes together use more memory than allowed or the notebook runs past its wall-time limit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Float, Integer, List, Unicode
from traitlets.config import Configurable

MB = 1024 * 1024


class Sandbox(Configurable):
    """Limits and read-only paths of the autograding sandbox (configure as `c.Sandbox.<name>`)."""

    enabled = Bool(True, help="Run kernels in bwrap; False is `--unsafe-no-sandbox`.").tag(config=True)
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
    processes = Integer(512, help="Processes and threads of one notebook (RLIMIT_NPROC, its own user id)."
                        ).tag(config=True)
    output_mb = Float(5.0, help="Output a notebook may produce (streams, results, errors); more is "
                                "dropped.").tag(config=True)
    file_mb = Integer(1024, help="Size of any file the notebook writes (RLIMIT_FSIZE).").tag(config=True)
    tmp_mb = Integer(256, help="Size of the notebook's private /tmp (a tmpfs).").tag(config=True)
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
        """The kernel's whole environment (nothing else of the grader's is passed on)."""
        cache = os.environ.get("DCV_CACHE_DIR") or str(Path.home() / ".cache" / "dcv")
        keras = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
        return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8",
                "TMPDIR": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib", "MPLBACKEND": "agg",
                "TF_CPP_MIN_LOG_LEVEL": "3", "NBGRADER_EXECUTION": "autograde", "DCV_CACHE_DIR": cache,
                "KERAS_HOME": keras, "PYDEVD_DISABLE_FILE_VALIDATION": "1", "PYTHONDONTWRITEBYTECODE": "1",
                "MALLOC_ARENA_MAX": "2"}

    def command(self, argv: list[str], workdir: str, runtime: str, uid: int) -> list[str]:
        """`argv` (a kernel command) wrapped in bwrap and prlimit, run as `uid` in `workdir`."""
        bwrap = shutil.which("bwrap") or "bwrap"
        args = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "sandbox",
                "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                "--ro-bind", "/usr", "/usr"]
        for link in ("lib", "lib64", "bin", "sbin", "lib32"):
            if os.path.islink(f"/{link}"):
                args += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
            elif os.path.isdir(f"/{link}"):
                args += ["--ro-bind", f"/{link}", f"/{link}"]
        for etc in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "fonts", "localtime", "alternatives",
                    "mime.types", "ssl"):
            args += ["--ro-bind-try", f"/etc/{etc}", f"/etc/{etc}"]
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(self.tmp_mb * MB), "--perms", "1777", "--tmpfs", "/tmp",
                 "--size", str(self.tmp_mb * MB), "--perms", "1777", "--tmpfs", "/dev/shm"]
        made = {"/", "/usr", "/tmp", "/etc", "/proc", "/dev"}

        def parents(path: str) -> list[str]:  # folders bwrap must create, readable by the kernel's user
            out = []
            for parent in reversed(Path(path).parents):
                if str(parent) not in made:
                    made.add(str(parent))
                    out += ["--perms", "0755", "--dir", str(parent)]
            return out

        for path in self.kernel_paths():
            args += parents(path) + ["--ro-bind", path, path]
        for path in (runtime, workdir):
            args += parents(path) + ["--bind", path, path]
        args += ["--chdir", workdir, "--clearenv"]
        for key, value in self.env(workdir).items():
            args += ["--setenv", key, value]
        limits = [f"--as={self.address_space_mb * MB}", f"--cpu={self.cpu_seconds}", f"--nproc={self.processes}",
                  f"--fsize={self.file_mb * MB}", "--core=0"]
        return [*args, "--", shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}",
                "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
                shutil.which("prlimit") or "prlimit", *limits, "--", *argv]


def unavailable() -> str | None:
    """Why bwrap cannot sandbox a kernel on this machine, or None when it can."""
    for tool in ("bwrap", "setpriv", "prlimit"):
        if not shutil.which(tool):
            package = "bubblewrap" if tool == "bwrap" else "util-linux"
            return f"`{tool}` is not installed (Debian package {package}: `bash scripts/setup.sh` installs it)"
    if os.geteuid() != 0:
        return ("bwrap must run as root here, to give each kernel a user id of its own (the process "
                "limit counts per user)")
    probe = Sandbox().command(["/bin/true"], "/tmp", "/tmp", 200000 - 1)
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap failed to start: {exc}"
    if done.returncode:
        return f"bwrap failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
    return None


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs inside the sandbox, talking over IPC sockets in `runtime`."""

    def __init__(self, *, sandbox: Sandbox, workdir: str, runtime: str, uid: int, **kwargs):
        super().__init__(transport="ipc", connection_file=os.path.join(runtime, "kernel.json"), **kwargs)
        self.sandbox, self.workdir, self.runtime, self.uid = sandbox, workdir, runtime, uid

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        """The kernel's command, wrapped in the sandbox."""
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file,
                *(extra_arguments or [])]
        return self.sandbox.command(argv, self.workdir, self.runtime, self.uid) if self.sandbox.enabled else argv

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw):
        """Start the kernel, its own console output going to `runtime`/../kernel.log (not ours)."""
        log = open(os.path.join(os.path.dirname(self.runtime), "kernel.log"), "ab")
        kw.update(stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        finally:
            log.close()

    def write_connection_file(self, **kwargs) -> None:
        """Write the connection file, readable by the kernel's own user."""
        super().write_connection_file(**kwargs)
        if self.sandbox.enabled:
            os.chown(self.connection_file, self.uid, self.uid)

    async def _async_interrupt_kernel(self) -> None:
        """Interrupt by a message: a signal would reach bwrap, not the kernel."""
        if self.kernel_spec is not None:
            self.kernel_spec.interrupt_mode = "message"
        await super()._async_interrupt_kernel()

    interrupt_kernel = _async_interrupt_kernel


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
            for p in procs:  # proportional set size: pages shared after fork() are not counted twice
                try:
                    used += p.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, used)
            if used > self.memory_bytes:
                self.kill(pid, f"memory limit ({self.memory_bytes // MB} MB for all its processes)")
                return

    def kill(self, pid: int, reason: str) -> None:
        """Kill the kernel (bwrap: its PID namespace goes with it) and say why."""
        self.reason = reason
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
