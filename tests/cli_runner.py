"""`python -m autograder <args>` for the tests, each command in a process forked from a warm server.

A command's own work is often a fraction of a second; starting Python and importing nbgrader, nbconvert
and SQLAlchemy costs about 0.9 CPU-s more, and the tests run about a hundred commands. So each test process
starts one `multiprocessing` fork server that has imported `PRELOAD` once, and each command is a fresh
process forked from it: it takes the test's environment and the repository as its folder, and runs
autograder/__main__.py as `python -m autograder` does, atexit and exit status included; its stdout and
stderr come back as a `subprocess.CompletedProcess`, as from `subprocess.run(..., text=True)`.
$DCV_TEST_COMMANDS=subprocess runs each command in a new interpreter instead (test_autograder_cli.py
checks that both give the same answers).
"""

from __future__ import annotations

import locale
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What every command imports: the CLI and the modules it imports when a command runs.
PRELOAD = ("autograder.cli", "autograder.grading", "autograder.collect", "autograder.record",
           "autograder.executors", "autograder.feedback", "nbgrader.api")
MODES = ("fork", "subprocess")
_LOCK = threading.Lock()
_CONTEXT: list[multiprocessing.context.BaseContext] = []


def mode() -> str:
    """How commands run: "fork" (from the warm server, the default) or "subprocess" ($DCV_TEST_COMMANDS,
    or where the server could not import this process's main script, as from `python - <<EOF`)."""
    chosen = os.environ.get("DCV_TEST_COMMANDS") or "fork"
    if chosen not in MODES:
        raise ValueError(f"DCV_TEST_COMMANDS={chosen!r}: expected one of {', '.join(MODES)}")
    main = sys.modules["__main__"]  # what multiprocessing imports again in each forked process
    script = None if getattr(main.__spec__, "name", None) else getattr(main, "__file__", None)
    return "subprocess" if script is not None and not os.path.isfile(script) else chosen


def _context() -> multiprocessing.context.BaseContext:
    """This process's fork-server context, its server started by the first command."""
    with _LOCK:
        if not _CONTEXT:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([*PRELOAD])
            _CONTEXT.append(context)
        return _CONTEXT[0]


def _command(args: list[str], env: dict[str, str], out: str, err: str) -> None:
    """In the forked process: become `python -m autograder <args>` run in the repository (never returns)."""
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    os.chdir(REPO)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # chosen anew from $TMPDIR, as in a new interpreter
    sys.argv = [str(REPO / "autograder" / "__main__.py"), *args]
    runpy.run_module("autograder", run_name="__main__", alter_sys=True)  # ends with os._exit(status)


def run(args: list[str], *, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run `python -m autograder <args>` in the repository with exactly `env`; its exit status and output."""
    command = [sys.executable, "-m", "autograder", *args]
    if mode() == "subprocess":
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="dcv-command-") as folder:
        out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        process = _context().Process(target=_command, args=(list(args), dict(env), out, err))
        process.start()
        process.join(timeout)
        timed_out = process.exitcode is None
        if timed_out:
            process.kill()
            process.join()
        encoding = locale.getpreferredencoding(False)
        stdout, stderr = (Path(p).read_text(encoding=encoding) if os.path.exists(p) else "" for p in (out, err))
    if timed_out:
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(command, process.exitcode, stdout, stderr)
