"""The warm kernels of autograder/zygote.py, seen from inside: what a kernel forked into the sandbox can
see and do, and what it inherits of the zygote (TensorFlow imported, nothing of other kernels).

Each test runs a small notebook through the grader's own executor (grading.SandboxedExecute), as
`autograde` does, and reads back what the kernel printed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autograder.grading import SandboxedExecute  # noqa: E402
from autograder.sandbox import Sandbox, Zygote, ZygoteServer, unavailable, zygote  # noqa: E402

pytestmark = pytest.mark.slow

UID = 200000 + 64 * 1000 + 7  # a user id no other test uses

FACTS = r'''
import errno, json, os, random, socket, sys
import numpy as np
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
seqpacket = []
for fd in map(int, os.listdir("/proc/self/fd")):
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    if s.type == socket.SOCK_SEQPACKET:
        seqpacket.append(fd)
    s.close()
def writable(path):
    try:
        open(path, "w").close()
        return True
    except OSError:
        return False
try:
    import autograder.grading
    grader_code = True
except ImportError:
    grader_code = False
try:
    socket.create_connection(("127.0.0.1", 22), timeout=2)
    network = "connected"
except OSError as exc:
    network = type(exc).__name__
import ctypes
import subprocess
dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
peek = ("import os\ntry:\n    open(f'/proc/{os.getppid()}/mem', 'rb').read(1)\n    print('read')\n"
        "except OSError as exc:\n    print(type(exc).__name__)")
child_reads = subprocess.run([sys.executable, "-c", peek], capture_output=True, text=True).stdout.strip()
# its own sockets (IOPub announces each cell's code, the hidden tests' too), from a process it starts
runtime = os.path.dirname(sys.argv[sys.argv.index("-f") + 1])
sockets = sorted(os.path.join(runtime, n) for n in os.listdir(runtime) if n.startswith("kernel-ipc"))
knock = ("import socket, sys\ntry:\n    socket.socket(socket.AF_UNIX).connect(sys.argv[1])\n    print('connected')\n"
         "except OSError as exc:\n    print(type(exc).__name__)")
child_connects = sorted({subprocess.run([sys.executable, "-c", knock, path], capture_output=True,
                                        text=True).stdout.strip() for path in sockets})
try:  # its own memory, as a file: writing it would rewrite the tests' helpers (a function's code, 8 bytes)
    open("/proc/self/mem", "r+b").close()
    own_memory = "writable"
except OSError as exc:
    own_memory = errno.errorcode.get(exc.errno, str(exc.errno))
quiet_threads = None
if "tensorflow" in sys.modules:
    import tensorflow as tf
    from tensorflow.python.eager import context
    started = bool(context.context()._initialized)
    tf.constant(1.0) + 1  # starts the kernel's eager context (its thread pools), as a notebook's first op does
    quiet_threads = not started and context.context().config.experimental.disable_thread_spinning
print(json.dumps({
    "quiet_threads": quiet_threads,
    "dumpable": dumpable, "child_reads_kernel_memory": child_reads, "own_memory": own_memory,
    "kernel_sockets": len(sockets), "child_connects": child_connects,
    "uid": os.getuid(), "euid": os.geteuid(), "cap_eff": status["CapEff"].strip(),
    "cap_bnd": status["CapBnd"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "hostname": socket.gethostname(), "root": sorted(os.listdir("/")),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "home": os.environ["HOME"], "cwd": os.getcwd(), "seqpacket": seqpacket, "grader_code": grader_code,
    "usr_writable": writable("/usr/x"), "work_writable": writable("x"), "network": network,
    "tensorflow_warm": "tensorflow" in sys.modules, "path": sys.path, "tempdir": __import__("tempfile").gettempdir(),
    "path_writable": [p for p in sys.path if os.access(p or ".", os.W_OK)],
    "mnist_warm": "dcv.data" in sys.modules and sys.modules["dcv.data"]._scaled.cache_info().currsize,
    "numpy": np.random.rand(), "random": random.random(),
    "visible": {path: os.path.exists(path)
                for path in ("REPO/solutions", "REPO/autograder", "REPO/.git", "/etc/passwd")},
}))
'''


_FOLDERS: list[str] = []  # the submission folders the tests made, removed once the module is done


@pytest.fixture(scope="module", autouse=True)
def _remove_folders():
    yield
    while _FOLDERS:
        shutil.rmtree(_FOLDERS.pop(), ignore_errors=True)


def submission_folder() -> str:
    """A new folder as `grading.grade` makes one (under the system's temporary folder, readable by the
    kernel's user: pytest's own tmp_path is root's alone), removed after the module's tests."""
    tmp = tempfile.mkdtemp(prefix="dcv-test-grade-")
    os.chmod(tmp, 0o755)
    _FOLDERS.append(tmp)
    return tmp


def run_kernel(sandbox: Sandbox, uid: int, warm: tuple[str, ...] = ("keras",)) -> dict:
    """Run FACTS in a kernel forked by the zygote that imported `warm`, in a fresh submission folder;
    return what it printed."""
    tmp = submission_folder()
    work, runtime = os.path.join(tmp, "work"), os.path.join(tmp, "runtime")
    for folder in (work, runtime):
        os.mkdir(folder)
        if sandbox.enabled:
            os.chown(folder, uid, uid)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(FACTS.replace("REPO", str(REPO)))]
    executor = SandboxedExecute(sandbox=sandbox, workdir=work, runtime=runtime, uid=uid, warm=warm)
    executor.preprocess(nb, {"metadata": {"path": work}})
    outputs = nb.cells[0].outputs
    assert outputs and outputs[0].output_type == "stream", outputs
    return {**json.loads(outputs[0].text), "tmp": tmp, "work": work}


@pytest.fixture(scope="module")
def two_kernels() -> list[dict]:
    assert unavailable() is None, unavailable()
    return [run_kernel(Sandbox(), UID), run_kernel(Sandbox(), UID + 1)]


def test_a_kernel_that_cannot_start_says_why_in_its_log():
    """Its console output reaches kernel.log (which the grader quotes) through the sandbox's pump: is the
    error of a kernel that cannot start there in full, before the sandbox is torn down?"""
    tmp = submission_folder()
    work, runtime = os.path.join(tmp, "work"), os.path.join(tmp, "runtime")
    for folder in (work, runtime):
        os.mkdir(folder)
        os.chown(folder, UID, UID)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)")]
    executor = SandboxedExecute(sandbox=Sandbox(processes=1), workdir=work, runtime=runtime, uid=UID,
                                warm=("numpy",))  # no second thread: ZeroMQ cannot start its own
    with pytest.raises(RuntimeError, match="Kernel died before replying to kernel_info"):
        executor.preprocess(nb, {"metadata": {"path": work}})
    log = open(os.path.join(tmp, "kernel.log"), errors="replace").read()
    assert log.strip() == "Resource temporarily unavailable (src/thread.cpp:241)", log[-2000:]


def test_kernel_runs_as_its_own_user_with_no_privilege(two_kernels):
    """Is the kernel its own user id, with no capability at all, unable to gain any, and out of reach of the
    processes it starts (not dumpable: a child cannot read or write its memory, nor connect to its sockets), and
    of its own code (its memory cannot be written as a file: /proc is read-only)?"""
    facts = two_kernels[0]
    assert (facts["uid"], facts["euid"]) == (UID, UID)
    assert int(facts["cap_eff"], 16) == 0 and int(facts["cap_bnd"], 16) == 0
    assert facts["no_new_privs"] == "1"
    assert facts["dumpable"] == 0 and facts["child_reads_kernel_memory"] == "PermissionError", facts
    assert facts["own_memory"] == "EROFS", facts
    assert facts["kernel_sockets"] == 5 and facts["child_connects"] == ["PermissionError"], facts


def test_kernel_sees_only_its_sandbox(two_kernels):
    """Does the kernel see its own processes only, a read-only system, its own folder writable, no network,
    nothing of the zygote (its socket, the grader's code), and no folder it can write on `sys.path`?"""
    facts = two_kernels[0]
    assert facts["hostname"] == "sandbox"
    assert facts["pids"][:3] == [1, 2, 3] and max(facts["pids"]) < 50  # the reaper, the log's pump, the kernel
    assert not any(facts["visible"].values()), facts["visible"]  # the repository's dcv/ and .venv/ only
    assert not facts["usr_writable"] and facts["work_writable"]
    assert facts["home"] == facts["cwd"] == facts["work"]
    assert facts["tempdir"] == "/tmp"  # its own (a tmpfs), whatever the zygote's imports chose
    assert facts["network"] != "connected"
    assert facts["seqpacket"] == [], "the zygote's socket leaked into the kernel"
    assert not facts["grader_code"]
    assert str(REPO) not in facts["path"]
    # nothing the kernel can write is where `import` looks: a module it wrote would run code never read
    assert facts["work"] not in facts["path"] and "" not in facts["path"], facts["path"]
    assert facts["path_writable"] == [], facts["path"]


def test_kernels_are_warm_and_share_no_random_state(two_kernels):
    """Do kernels start with TensorFlow imported, its threads set to sleep when idle (zygote.
    quiet_tensorflow_threads, through a private attribute of its eager context) but its context not yet
    started, yet draw different random numbers (forked, then reseeded)?"""
    first, second = two_kernels
    assert first["tensorflow_warm"] and second["tensorflow_warm"]
    assert first["quiet_threads"] is True and second["quiet_threads"] is True
    assert first["numpy"] != second["numpy"] and first["random"] != second["random"]


def test_kernel_leaves_nothing_behind(two_kernels):
    """Once the notebook is done, is no process of the kernel's user left running?"""
    import psutil

    left = [p.pid for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in (UID, UID + 1)]
    assert left == []


def test_unsafe_mode_runs_unconfined():
    """With the sandbox off (`--unsafe-no-sandbox`), does the kernel run as the grader's user, from a zygote
    that imported only what it was asked to (here nothing beyond what every kernel imports: not Keras), its
    temporary files in the submission's folder (not the system's /tmp, which outlives a kernel killed at once)?"""
    sandbox = Sandbox()
    sandbox.enabled = False
    facts = run_kernel(sandbox, UID + 2, warm=())
    assert facts["uid"] == os.getuid() and not facts["tensorflow_warm"]
    assert facts["tempdir"] == os.path.join(facts["tmp"], "tmp")  # removed with the submission's folder


def test_a_warm_call_fills_the_cache_kernels_share():
    """Does a zygote that warms MNIST give its kernels the scaled arrays already made (and one that does
    not, none)?"""
    facts = run_kernel(Sandbox(), UID + 3, warm=("dcv.data", "dcv.data.mnist_scaled()"))
    assert facts["mnist_warm"] == 1
    assert run_kernel(Sandbox(), UID + 3, warm=("dcv.data",))["mnist_warm"] == 0


def test_a_warm_call_runs_while_the_zygote_imports_the_rest(tmp_path, monkeypatch, capsys):
    """Does `warm_call` return while its call is still running (so MNIST is scaled while TensorFlow is
    imported), finish it when joined, and report a call that fails instead of raising?"""
    from autograder.zygote import warm_call

    (tmp_path / "slow_warm.py").write_text(
        "import threading\nstarted, release, done = threading.Event(), threading.Event(), []\n"
        "def fill():\n    started.set()\n    release.wait(10)\n    done.append(1)\n"
        "def broken():\n    raise ValueError('no cache')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    thread = warm_call("slow_warm.fill()")
    import slow_warm

    assert slow_warm.started.wait(10) and thread.is_alive() and not slow_warm.done
    slow_warm.release.set()
    thread.join(10)
    assert not thread.is_alive() and slow_warm.done == [1]
    warm_call("slow_warm.broken()").join(10)
    warm_call("no_such_module_anywhere.fill()").join(10)
    said = capsys.readouterr().err
    assert "warm call slow_warm.broken() failed: ValueError: no cache" in said
    assert "warm call no_such_module_anywhere.fill() failed: ModuleNotFoundError" in said


def test_a_kernel_is_ready_as_soon_as_it_answers():
    """Is a kernel ready once it has answered and IOPub has brought one message (it is connected), without
    jupyter_client's last step, reading IOPub until it has been quiet for 0.2 s (every notebook paid it)?"""
    import asyncio
    from queue import Empty

    from autograder.sandbox import SandboxedKernelClient

    class Channel:
        def __init__(self, *messages: dict):
            self.messages = list(messages)

        async def get_msg(self, timeout: float | None = None) -> dict:
            if not self.messages:
                raise Empty
            return self.messages.pop(0)

    class Client(SandboxedKernelClient):  # a kernel that has answered, IOPub busy with more to come
        shell_channel = iopub_channel = None

        def kernel_info(self) -> None:
            pass

        async def is_alive(self) -> bool:
            return True

    client = Client()
    client.shell_channel = Channel({"msg_type": "kernel_info_reply", "content": {"protocol_version": "5.4"}})
    client.iopub_channel = Channel(*({"msg_type": "status"} for _ in range(3)))
    asyncio.run(client.wait_for_ready(timeout=5))
    assert len(client.iopub_channel.messages) == 2  # one read, as a sign of life; the rest left to nbclient
    client.shell_channel, client.iopub_channel = Channel(), Channel()
    with pytest.raises(RuntimeError, match="didn't respond in 0 seconds"):  # a kernel that never answers
        asyncio.run(client.wait_for_ready(timeout=0))


def test_a_sandboxed_kernel_is_heard_from_its_first_cell_and_stops():
    """Is a kernel started by the grader's manager heard from its first cell on (IOPub connected when it
    is ready; the client's sockets retry connecting every RECONNECT_MS), and is it gone, every process of it,
    as soon as it is shut down, even one that ignores SIGTERM and would take a minute to answer a shutdown
    request (a polite shutdown waited 2.5 s for it)?"""
    import asyncio
    import time

    import psutil
    import zmq

    from autograder.sandbox import RECONNECT_MS, SandboxedKernelClient, SandboxedKernelManager

    tmp = submission_folder()
    work, runtime = os.path.join(tmp, "work"), os.path.join(tmp, "runtime")
    for folder in (work, runtime):
        os.mkdir(folder)
        os.chown(folder, UID + 4, UID + 4)

    async def scenario():
        km = SandboxedKernelManager(sandbox=Sandbox(), workdir=work, runtime=runtime, uid=UID + 4,
                                    kernel_name="python3")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            heard = []
            await kc.execute_interactive("print('heard')", timeout=30, output_hook=heard.append)
            retry = kc.shell_channel.socket.getsockopt(zmq.RECONNECT_IVL)
            await kc.execute_interactive("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                         "get_ipython().kernel.do_shutdown = lambda restart: time.sleep(60)",
                                         timeout=30)
        finally:
            kc.stop_channels()
            started = time.monotonic()
            await km.shutdown_kernel()
        return kc, heard, retry, time.monotonic() - started, await km.is_alive()

    kc, heard, retry, seconds, alive = asyncio.run(scenario())
    assert isinstance(kc, SandboxedKernelClient) and retry == RECONNECT_MS
    assert [m["content"]["text"] for m in heard if m["msg_type"] == "stream"] == ["heard\n"]
    left = [p.pid for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == UID + 4]
    assert not alive and left == [] and seconds < 1, (alive, left, seconds)


def test_a_kernel_stopped_at_once_still_counts_its_cpu_time(monkeypatch):
    """Is the CPU time of a kernel that the grader stops after its last cell counted, once its zygote is
    closed, in the grader's children's time (as CI's table of stages counts it)? Processes killed with their
    PID namespace are not counted: PID 1 must kill the kernel and reap it itself."""
    import resource

    from autograder import sandbox as sandbox_module

    monkeypatch.delenv("DCV_ZYGOTE_SOCKET", raising=False)
    monkeypatch.setattr(sandbox_module, "_ZYGOTES", {})  # a zygote of this test's own, closed below
    cpu = lambda: sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f) for f in ("ru_utime", "ru_stime"))
    before = cpu()
    tmp = submission_folder()
    work, runtime = os.path.join(tmp, "work"), os.path.join(tmp, "runtime")
    for folder in (work, runtime):
        os.mkdir(folder)
        os.chown(folder, UID + 5, UID + 5)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time\nwhile time.process_time() < 2.0:\n    pass")]
    SandboxedExecute(sandbox=Sandbox(), workdir=work, runtime=runtime, uid=UID + 5, warm=()).preprocess(
        nb, {"metadata": {"path": work}})
    assert not nb.cells[0].outputs  # it ran to its end
    sandbox_module._ZYGOTES[()].close()
    assert cpu() - before >= 2.0, cpu() - before


def test_warm_modules_are_what_the_assignment_imports():
    """Does a zygote import what the assignment's source code cells import, from the allowed list, and no more?"""
    from autograder.sandbox import warm_modules

    cells = [{"cell_type": "code", "source": "import numpy as np\nfrom dcv import grader\nimport os, evil"},
             {"cell_type": "code", "source": "from keras import layers\nimport matplotlib.pyplot as plt"},
             {"cell_type": "markdown", "source": "import tensorflow"},
             {"cell_type": "code", "source": "this is not Python"}]
    assert warm_modules(cells) == (
        "numpy", "keras", "matplotlib.pyplot", "dcv.grader")
    assert warm_modules([{"cell_type": "code", "source": "import math"}]) == ()
    assert warm_modules([{"cell_type": "code", "source": ["import ", "numpy\n"]}]) == ("numpy",)  # as in a file
    mnist = [{"cell_type": "code", "source": "from dcv import data\nX = data.mnist_scaled()[0]"}]
    assert warm_modules(mnist) == ("dcv.data", "dcv.data.mnist_scaled()")
    named = [{"cell_type": "code", "source": "mnist_scaled = print\nmnist_scaled()"}]  # not dcv.data's
    assert warm_modules(named) == ()


def test_a_shared_zygote_serves_commands_and_falls_back(monkeypatch):
    """With $DCV_ZYGOTE_SOCKET set (as the grading tests do), is a grader served by a copy of the shared
    zygote when it imported what the grader asks, its kernels as confined as any, and does a grader that
    asks for more start a zygote of its own?"""
    server = ZygoteServer(("numpy", "dcv.plots"))
    try:
        monkeypatch.setenv("DCV_ZYGOTE_SOCKET", server.path)
        facts = run_kernel(Sandbox(), UID + 2, warm=("dcv.plots",))
        assert zygote(("dcv.plots",)).process is None  # served by the shared one
        assert (facts["uid"], int(facts["cap_eff"], 16), facts["dumpable"]) == (UID + 2, 0, 0)
        assert facts["pids"] == [1, 2, 3] and facts["seqpacket"] == [] and not facts["grader_code"]
        own = Zygote(("numpy", "keras"))
        assert own.process is not None  # keras: not in the shared one
        own.close()
    finally:
        server.close()
    assert not os.path.exists(server.path)


def test_a_warm_notebook_kernel_uses_the_temporary_folder_of_its_own_environment(tmp_path, monkeypatch):
    """A kernel of the notebook stages (scripts/warm_kernel.py), forked from a zygote whose imports chose
    theirs (importing Keras does): does it use the $TMPDIR it was started with, as a fresh kernel does?
    run_tests.py gives each notebook stage its own, removed with the stage (nbval kills its kernels, so
    what a notebook removes at exit stays)."""
    from jupyter_client.manager import start_new_kernel

    spec = tmp_path / "kernels" / "dcv-warm-test" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": [sys.executable, str(REPO / "scripts" / "warm_kernel.py"),
                                         "{connection_file}"], "display_name": "warm", "language": "python"}))
    own = tmp_path / "stage-tmp"
    own.mkdir()
    server = ZygoteServer(("keras",))
    try:
        for name, value in {"JUPYTER_PATH": str(tmp_path), "DCV_WARM_KERNEL_SOCKET": server.path,
                            "TMPDIR": str(own)}.items():
            monkeypatch.setenv(name, value)
        km, kc = start_new_kernel(kernel_name="dcv-warm-test", cwd=str(tmp_path))
        said = []
        try:
            kc.execute_interactive("import sys, tempfile; print('keras' in sys.modules, tempfile.gettempdir()); "
                                   "tempfile.mkdtemp(prefix='left-')", timeout=60,
                                   output_hook=lambda m: said.append(m["content"].get("text", "")))
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)  # as nbval stops its kernels
    finally:
        server.close()
    assert "".join(said).split() == ["True", str(own)]
    assert [p.name[:5] for p in own.iterdir()] == ["left-"]


def test_a_zygote_never_asked_is_stopped_without_waiting_for_its_imports(monkeypatch):
    """`autograde` starts its zygote before it knows whether there is anything to grade: is one that was
    never asked for a kernel killed at close (not waited for through TensorFlow's import), while one that
    served ends by itself, and neither leaves its folder behind?"""
    monkeypatch.delenv("DCV_ZYGOTE_SOCKET", raising=False)
    unused = Zygote(("keras",))
    unused.close()
    assert unused.process.returncode == -9 and not os.path.exists(unused.folder)
    used = Zygote(())
    assert used.request({"op": "poll", "pid": 1}) == {"status": 0}  # answered once its imports are done
    used.close()
    assert used.process.returncode == 0 and not os.path.exists(used.folder)


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling (Linux before 5.3)"])
def test_waiting_for_a_child_returns_when_it_exits_and_leaves_it_unreaped(pidfd, monkeypatch):
    """Does `_wait_for` (PID 1 waiting for the log's pump) return as the child exits, not later, and after
    `seconds` for one that does not exit, without reaping either; with a pidfd and with the fallback?"""
    import signal
    import time

    from autograder import zygote as z

    if not pidfd:
        def no_pidfd(pid):
            raise OSError("pidfd_open: not on this kernel")
        monkeypatch.setattr(z.os, "pidfd_open", no_pidfd)
    quick, stuck = os.fork(), None
    if not quick:
        time.sleep(0.3)
        os._exit(3)
    try:
        started = time.monotonic()
        z._wait_for(quick, 10)
        assert 0.25 < time.monotonic() - started < 2
        assert os.waitid(os.P_PID, quick, os.WEXITED | os.WNOHANG | os.WNOWAIT).si_status == 3  # not reaped
        assert os.waitpid(quick, 0)[1] >> 8 == 3
        stuck = os.fork()
        if not stuck:
            time.sleep(60)
            os._exit(0)
        started = time.monotonic()
        z._wait_for(stuck, 0.3)
        assert 0.25 < time.monotonic() - started < 2
    finally:
        if stuck:
            os.kill(stuck, signal.SIGKILL)
            os.waitpid(stuck, 0)
