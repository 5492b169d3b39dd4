"""Run the test suite stage by stage (unit, chapters, solutions, grading, book, browser) and time each.

`bash scripts/test.sh` calls this after the set-up. With no arguments it runs every stage, each as
its own pytest process, goes on after a failure (a stage that needs a failed one fails at once,
naming it), and ends with a table of the stages' wall times, the CPU they ran on, and one line
`N passed, N failed, N skipped`. With arguments it runs one pytest with them, as before
(`bash scripts/test.sh -m "not slow"`, `bash scripts/test.sh tests/test_data.py`).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from conftest import CHAPTERS_CACHED, STAGES, stage_paths  # the one declaration of the stages

REPORTS = ROOT / "_build" / "test-reports"
# nbval's per-cell limit: far above any cell's run time on the slowest host (nothing may depend on
# a cell finishing just in time); the CI's own 90-minute limit is what bounds a run that hangs.
PYTEST = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout=1800"]
NEEDS = {"book": "chapters"}  # a stage that cannot run when another failed: it fails at once
# Stages whose files run on several processes (pytest-xdist, one file per worker at a time);
# $DCV_TEST_WORKERS sets how many (default: the number of cores, at most 2; 1 = none).
PARALLEL = ("unit", "chapters", "solutions", "grading")


def cpu() -> str:
    """The CPU's model name and its widest vector instructions (AVX-512 or AVX2), for every timing printed."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", info)
    flags = set((re.search(r"flags\s*:\s*(.*)", info) or re.search("()", "")).group(1).split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    name = model.group(1).strip() if model else platform.processor() or "unknown CPU"
    return f"{name} ({vector}), {os.cpu_count()} cores"


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


def run_stage(stage: str, extra: list[str]) -> tuple[int, float, dict[str, int]]:
    """Run one stage's files with pytest; return its exit status (0 when it has no tests), seconds, counts."""
    paths = [str(p.relative_to(ROOT)) for p in stage_paths(stage)]
    report = REPORTS / f"{stage}.xml"
    report.unlink(missing_ok=True)
    print(f"\n===== stage: {stage} ({len(paths)} file(s)) =====", flush=True)
    if not paths:
        return 0, 0.0, counts(report)
    workers = min(int(os.environ.get("DCV_TEST_WORKERS") or min(os.cpu_count() or 1, 2)), len(paths))
    if stage in PARALLEL and workers > 1:
        extra = ["-n", str(workers), "--dist", "loadfile", *extra]
    if stage == "chapters":
        shutil.rmtree(CHAPTERS_CACHED, ignore_errors=True)
    start = time.monotonic()
    status = subprocess.run([*PYTEST, f"--junitxml={report}", *extra, *paths], cwd=ROOT).returncode
    return (0 if status == 5 else status), time.monotonic() - start, counts(report)


def main(argv: list[str]) -> int:
    """Run every stage (no arguments) or one pytest with the arguments; return the exit status."""
    if argv:
        paths = [a for a in argv if not a.startswith("-") and (ROOT / a.split("::")[0]).exists()]
        default = [] if paths else ["tests", "chapters", "solutions"]
        return subprocess.run([*PYTEST, *default, *argv], cwd=ROOT).returncode
    REPORTS.mkdir(parents=True, exist_ok=True)
    setup = float(os.environ.get("DCV_SETUP_SECONDS") or 0)
    print(f"CPU: {cpu()}", flush=True)
    rows, failed = [("set-up", 0, setup, None)], set()
    for stage in STAGES:
        if NEEDS.get(stage) in failed:
            print(f"\n===== stage: {stage}: FAILED at once: it needs the {NEEDS[stage]} stage, which failed =====")
            rows.append((stage, 1, 0.0, {"passed": 0, "failed": 1, "skipped": 0}))
            failed.add(stage)
            continue
        status, seconds, tally = run_stage(stage, [])
        if status:
            failed.add(stage)
        rows.append((stage, status, seconds, tally))
    total = {k: sum(r[3][k] for r in rows if r[3]) for k in ("passed", "failed", "skipped")}
    print(f"\n{'stage':<10} {'wall':>9} {'passed':>7} {'failed':>7} {'skipped':>8}  status")
    for stage, status, seconds, tally in rows:
        minutes = f"{int(seconds // 60)}:{seconds % 60:04.1f}"
        if tally is None:
            print(f"{stage:<10} {minutes:>9}")
            continue
        print(f"{stage:<10} {minutes:>9} {tally['passed']:>7} {tally['failed']:>7} {tally['skipped']:>8}  "
              f"{'ok' if not status else 'FAILED'}")
    wall = sum(r[2] for r in rows)
    print(f"{'total':<10} {int(wall // 60)}:{wall % 60:04.1f} on {cpu()}")
    print(f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
