"""Run the test suite stage by stage (unit, chapters, solutions, grading, book, browser) and time each.

`bash scripts/test.sh` calls this after the set-up. With no arguments it runs every stage, each as
its own pytest process, one after the other in their order (`AFTER`), goes on after a
failure (a stage that needs a failed one fails at once, naming it), and ends with a table of the
stages' start, wall and CPU times, the CPU they ran on, and one line `N passed, N failed, N skipped`.
Each line a stage prints is shown as it comes, prefixed with the stage's name; the whole of it is
also kept in `_build/test-reports/<stage>.log`. With arguments it runs one pytest with them, as
before (`bash scripts/test.sh -m "not slow"`, `bash scripts/test.sh tests/test_data.py`).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.machine import busy_seconds, cores, cpu, flags  # the one description of the machine
from conftest import CHAPTERS_CACHED, STAGES, stage_paths  # the one declaration of the stages

REPORTS = ROOT / "_build" / "test-reports"
# nbval's per-cell limit: far above any cell's run time on the slowest host (nothing may depend on
# a cell finishing just in time); the CI's own 90-minute limit is what bounds a run that hangs.
PYTEST = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout=1800"]
# A stage starts only once these have finished: grading uses the models the solutions stage trains,
# the book reuses the chapters' execution, the browser opens the built book. The chapters wait for the
# solutions for time alone: both train models on every core, and together they ran 10% slower than
# one after the other; grading, mostly kernels starting, overlaps the chapters instead.
AFTER = {"grading": ("solutions",), "chapters": ("solutions",), "book": ("chapters",), "browser": ("book",)}
NEEDS = {"book": "chapters", "browser": "book"}  # cannot run when this one failed: it fails at once
# Stages started first when several are ready: the longest chain (solutions, then grading) first.
PRIORITY = ("solutions", "grading", "chapters", "book", "browser", "unit")
# How many stages run at once ($DCV_TEST_STAGES; default 1, one after the other). Each stage already
# keeps both cores busy (PARALLEL); two at once took the same wall time on 2 cores but 15% more CPU
# (their TensorFlow threads contend), which a host with slower cores pays in minutes (benchmarks/README.md).
CONCURRENT = int(os.environ.get("DCV_TEST_STAGES") or 1)
# Stages whose files run on several processes (pytest-xdist, one file per worker at a time);
# $DCV_TEST_WORKERS sets how many (default: the cores it may use, at most 2; 1 = none).
PARALLEL = ("unit", "chapters", "solutions", "grading")
# How pytest-xdist shares a stage's files among its workers: whole files (their module fixtures run once),
# started in the order of `stage_paths` (conftest.SLOWEST_FIRST first). xdist's own order, files with the
# most tests first, started chapter 5 (a third of its stage's time) sixth of nine.
XDIST = ["--dist", "loadfile", "--no-loadscope-reorder"]
POLL = 0.5  # seconds between looks at which stages have finished
# Stages whose notebooks run in kernels forked warm by one shared zygote (scripts/warm_kernel.py):
# each notebook would otherwise import TensorFlow in a fresh kernel (~6 CPU-s, twenty notebooks).
WARM = ("chapters", "solutions")
WARM_KERNEL = "dcv-warm"


def counts(report: Path) -> dict[str, int]:
    """passed / failed / skipped of a JUnit XML report (errors count as failed)."""
    if not report.exists():
        return {"passed": 0, "failed": 0, "skipped": 0}
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}


def minutes(seconds: float) -> str:
    """Seconds as m:ss.s (rounded to tenths first: 359.96 is 6:00.0, not 5:60.0)."""
    whole, tenths = divmod(round(seconds * 10), 600)
    return f"{whole}:{tenths / 10:04.1f}"


@dataclass
class Stage:
    """One stage's pytest process and what it gave: exit status, start, wall and CPU seconds, counts."""

    name: str
    status: int | None = None          # None while it has not finished
    start: float = 0.0                 # seconds after the first stage started
    seconds: float = 0.0
    cpu_seconds: float = 0.0           # user + system time of the process and everything it waited for
    tally: dict[str, int] = field(default_factory=lambda: {"passed": 0, "failed": 0, "skipped": 0})
    thread: threading.Thread | None = None


PRINT = threading.Lock()


def say(line: str) -> None:
    """Print one whole line (stages print from several threads)."""
    with PRINT:
        print(line, flush=True)


def command(stage: str, warm: dict[str, str] | None = None) -> list[str]:
    """The pytest command line of a stage (empty when it has no files)."""
    paths = [str(p.relative_to(ROOT)) for p in stage_paths(stage)]
    if not paths:
        return []
    workers = min(int(os.environ.get("DCV_TEST_WORKERS") or min(cores(), 2)), len(paths))
    extra = ["-n", str(workers), "--dist", "loadfile"] if stage in PARALLEL and workers > 1 else []
    if warm and stage in WARM:
        extra.append(f"--nbval-kernel-name={WARM_KERNEL}")
    return [*PYTEST, f"--junitxml={REPORTS / f'{stage}.xml'}", *extra, *paths]


def warm_kernels() -> dict[str, str]:
    """Start the zygote of the WARM stages' kernels and write their kernelspec; return the environment
    that points the stages to both (empty, and the stages start fresh kernels, where it cannot start)."""
    from autograder.sandbox import ZygoteServer
    from autograder.zygote import WARMABLE

    env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}  # as ipykernel sets it
    try:
        server = ZygoteServer(WARMABLE, env=env)
    except (OSError, RuntimeError) as error:
        say(f"warm kernels unavailable ({error}): the notebooks start fresh kernels")
        return {}
    atexit.register(server.close)
    spec = ROOT / "_build" / "kernels" / WARM_KERNEL / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"argv": [sys.executable, str(ROOT / "scripts" / "warm_kernel.py"), "{connection_file}"],
                                "display_name": "Python 3 (forked warm, tests)", "language": "python",
                                "interrupt_mode": "signal"}, indent=1))
    paths = [str(ROOT / "_build"), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    return {"DCV_WARM_KERNEL_SOCKET": server.path, "JUPYTER_PATH": os.pathsep.join(paths)}


def kernels_cpu(log: Path, wait: float = 30.0) -> float:
    """CPU seconds of the warm kernels in a stage's log (autograder/zygote.serve), once every kernel it started
    has ended: a kernel that nbval stops by killing its process is reaped, and logged, by the zygote just
    after the stage's pytest may have exited. After `wait` seconds, what has been logged."""
    deadline = time.monotonic() + wait
    while True:
        lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
        started = {words[1] for words in lines if words[0] == "started"}
        ended = {words[1]: words[2] for words in lines if words[0] == "ended"}
        if started <= ended.keys() or time.monotonic() > deadline:
            return sum(float(seconds) for seconds in ended.values() if seconds != "-")
        time.sleep(0.1)


def run_stage(stage: Stage, origin: float, warm: dict[str, str]) -> None:
    """Run one stage's pytest, its lines prefixed with its name and kept in <stage>.log; fill in `stage`."""
    report, log = REPORTS / f"{stage.name}.xml", REPORTS / f"{stage.name}.log"
    report.unlink(missing_ok=True)
    if stage.name == "chapters":
        shutil.rmtree(CHAPTERS_CACHED, ignore_errors=True)
    kernels = REPORTS / f"{stage.name}.kernel-cpu"  # its warm kernels' CPU seconds (kernels_cpu)
    kernels.unlink(missing_ok=True)
    warm = {**warm, "DCV_WARM_KERNEL_CPU": str(kernels)} if warm and stage.name in WARM else {}
    cmd = command(stage.name, warm)
    stage.start = time.monotonic() - origin
    say(f"===== stage: {stage.name} started at {minutes(stage.start)} ({len(stage_paths(stage.name))} file(s)) =====")
    if not cmd:
        stage.status = 0
        return
    if stage.name in WARM:  # nbval kills its kernels: what their notebooks leave at exit goes with the stage
        temporary = tempfile.mkdtemp(prefix=f"dcv-{stage.name}-")
        try:
            run_pytest(stage, cmd, log, report, kernels, {**warm, "TMPDIR": temporary})
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    else:
        run_pytest(stage, cmd, log, report, kernels, warm)


def run_pytest(stage: Stage, cmd: list[str], log: Path, report: Path, kernels: Path, env: dict[str, str]) -> None:
    """Run the stage's pytest command with `env` added to this environment; fill in `stage`."""
    started = time.monotonic()
    with log.open("w") as keep:
        # under reap.py, whatever the stage's processes start and abandon (Chromium's) is waited for, and counted
        process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "reap.py"), *cmd], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                   env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
        for line in process.stdout:
            keep.write(line)
            say(f"[{stage.name}] {line.rstrip()}")
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    stage.seconds = time.monotonic() - started
    stage.cpu_seconds = usage.ru_utime + usage.ru_stime  # its warm kernels are the zygote's children:
    stage.cpu_seconds += kernels_cpu(kernels)
    stage.tally = counts(report)
    stage.status = 0 if process.returncode == 5 else process.returncode  # 5: no tests collected
    say(f"===== stage: {stage.name} {'ok' if not stage.status else 'FAILED'} after {minutes(stage.seconds)} =====")


def run_stage_safely(stage: Stage, origin: float, warm: dict[str, str]) -> None:
    """run_stage, with anything it raises reported as the stage's failure (so no later stage waits forever)."""
    try:
        run_stage(stage, origin, warm)
    except Exception as error:  # reported, and the stage counts as failed
        say(f"===== stage: {stage.name} FAILED: {type(error).__name__}: {error} =====")
        stage.status = 1
        stage.tally = {**stage.tally, "failed": stage.tally["failed"] + 1}


def schedule(stages: dict[str, Stage], warm: dict[str, str]) -> None:
    """Run every stage, at most CONCURRENT at once, each once those it comes AFTER have finished."""
    origin, waiting = time.monotonic(), [s for s in PRIORITY if s in stages] + [s for s in stages if s not in PRIORITY]
    last_beat = origin
    while waiting or any(s.thread and s.thread.is_alive() for s in stages.values()):
        running = [s for s in stages.values() if s.thread and s.thread.is_alive()]
        for name in list(waiting):
            if len(running) >= CONCURRENT:
                break
            if any(stages[before].status is None for before in AFTER.get(name, ()) if before in stages):
                continue
            waiting.remove(name)
            stage = stages[name]
            if NEEDS.get(name) in stages and stages[NEEDS[name]].status:
                say(f"===== stage: {name}: FAILED at once: it needs the {NEEDS[name]} stage, which failed =====")
                stage.status, stage.start = 1, time.monotonic() - origin
                stage.tally = {"passed": 0, "failed": 1, "skipped": 0}
                continue
            stage.thread = threading.Thread(target=run_stage_safely, args=(stage, origin, warm), daemon=True)
            stage.thread.start()
            running.append(stage)
        time.sleep(POLL)
        if time.monotonic() - last_beat >= 60:  # a line a minute, so that a quiet stage is never mistaken for a hang
            last_beat = time.monotonic()
            say(f"----- {minutes(last_beat - origin)}: running "
                + ", ".join(f"{s.name} ({minutes(last_beat - origin - s.start)})" for s in running))


def main(argv: list[str]) -> int:
    """Run every stage (no arguments) or one pytest with the arguments; return the exit status."""
    if argv:
        paths = [a for a in argv if not a.startswith("-") and (ROOT / a.split("::")[0]).exists()]
        default = [] if paths else ["tests", "chapters", "solutions"]
        return subprocess.run([*PYTEST, *default, *argv], cwd=ROOT).returncode
    REPORTS.mkdir(parents=True, exist_ok=True)
    setup = float(os.environ.get("DCV_SETUP_SECONDS") or 0)
    say(f"CPU: {cpu()}; stages at once: {CONCURRENT}")
    stages = {name: Stage(name) for name in STAGES}
    began, busy = time.monotonic(), busy_seconds()
    schedule(stages, warm_kernels() if any(name in stages for name in WARM) else {})
    wall, busy = setup + time.monotonic() - began, busy_seconds() - busy
    rows = list(stages.values())
    total = {k: sum(s.tally[k] for s in rows) for k in ("passed", "failed", "skipped")}
    say(f"\n{'stage':<10} {'start':>7} {'wall':>7} {'cpu':>7} {'passed':>7} {'failed':>7} {'skipped':>8}  status")
    say(f"{'set-up':<10} {'':>7} {minutes(setup):>7}")
    for s in rows:
        verdict = "ok" if not s.status else "FAILED"
        say(f"{s.name:<10} {minutes(s.start):>7} {minutes(s.seconds):>7} {minutes(s.cpu_seconds):>7} "
            f"{s.tally['passed']:>7} {s.tally['failed']:>7} {s.tally['skipped']:>8}  {verdict}")
    cpu_total = sum(s.cpu_seconds for s in rows)
    say(f"{'total':<10} {'':>7} {minutes(wall):>7} {minutes(cpu_total):>7}  on {cpu()}")
    say(f"CPU flags: {flags()}")
    say("start: after the set-up; cpu: user + system time of the stage's processes and of every process they "
        "started and waited for (grading's sandboxed kernels and the notebooks' warm kernels included)")
    if busy:
        say(f"the machine was busy for {minutes(busy)} of CPU time during the stages: about the wall time "
            "they would take on one core of it")
    say(f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    return 1 if any(s.status for s in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
