"""Time the grading of a generated class: serial, `--workers 2`, and a 2-worker Dask LocalCluster.

The class: 40 submissions of exercise 2 (right, wrong in one part, untouched, a broken cell, in
turn) and 10 of exercise 9 (the solved notebook and the reference model that the solution's own run
saved); `--ex09 0` leaves exercise 9 out, `--ex02 0` exercise 2. Each way of running grades the class
in a fresh copy of a released course folder, through `python -m autograder autograde` as an
instructor runs it: serially, with two local workers, on a LocalCluster started for the round, and on
the same Dask workers a second time (a worker keeps its zygotes from one command to the next, so this
is what a standing cluster costs once warm); the grades of all four must be identical. `--repeat N`
runs the four ways N times in turn and shows each time as the best of its N rounds: the host's speed
drifts by 20% within an hour. It also runs each kind of notebook once without the grader (plain
nbclient, no sandbox, no nbgrader), so that the grader's overhead per notebook shows: the serial time
per notebook minus that. Each way's row also gives the CPU time the whole machine spent while it ran
(/proc/stat), and so the cores it kept busy on average: on 2 cores, no way can take less than half
its CPU time.
Not a test: run it by hand (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import nbformat
from test_grading import replace_in_cell, solve, source_nb

from benchmarks import machine

EX02, EX09 = "ex02_params_memory", "ex09_mnist"


def autograde(course: Path, name: str, folder: Path, *options: str) -> tuple[float, float]:
    """Run autograde; return its wall time and the CPU time the whole machine spent meanwhile, in seconds."""
    env = {k: v for k, v in os.environ.items() if k != "DCV_COURSE_DIR"}
    started, busy = time.monotonic(), machine.busy_seconds()
    done = subprocess.run([sys.executable, "-m", "autograder", "autograde", name, str(folder), "--course-dir",
                           str(course), *options], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"autograde failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.monotonic() - started, machine.busy_seconds() - busy


def bare(notebooks: list, folder: Path, extra: list[Path] = (), repeat: int = 2) -> float:
    """Mean over the notebooks of the best of `repeat` wall times to execute each with plain nbclient (its own
    kernel, errors allowed), `NBGRADER_EXECUTION` set as when grading (so exercise 9 loads its saved model
    instead of training)."""
    from nbclient import NotebookClient

    os.environ["NBGRADER_EXECUTION"] = "autograde"  # the kernels inherit it
    seconds = []
    for i, nb in enumerate(notebooks):
        best = float("inf")
        for r in range(repeat):
            work = folder / f"bare{i}-{r}"
            work.mkdir(parents=True)
            for path in extra:
                shutil.copy2(path, work / path.name)
            started = time.monotonic()
            NotebookClient(nbformat.from_dict(nb), timeout=600, allow_errors=True, kernel_name="python3",
                           resources={"metadata": {"path": str(work)}}).execute()
            best = min(best, time.monotonic() - started)
        seconds.append(best)
    del os.environ["NBGRADER_EXECUTION"]
    return sum(seconds) / len(seconds)


def grades(course: Path) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="dcv-cnn") as gb:
        return {(a.name, s.student.id, g.name): g.auto_score for a in gb.assignments for s in a.submissions
                for nb in s.notebooks for g in nb.grades}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ex02", type=int, default=40)
    parser.add_argument("--ex09", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the four ways, alternating; each "
                        "time shown is the best of its rounds (the host's speed drifts)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.ex02 < 0 or args.ex09 < 0 or not args.ex02 + args.ex09:
        parser.error("--ex02 and --ex09 count submissions: 0 or more, and at least one in all")
    counts = {EX02: args.ex02, EX09: args.ex09}
    model = REPO / "solutions" / EX09 / "mnist_model.keras"
    if args.ex09 and not model.is_file():
        raise SystemExit(f"{model.relative_to(REPO)} is missing: run the solution notebook once (it saves it), "
                         "or pass --ex09 0")
    work = Path(tempfile.mkdtemp(prefix="grading-benchmark-"))
    template = work / "template"
    names = [EX02] + ([EX09] if args.ex09 else [])  # ex02's release is the template of its class
    for name in names:
        subprocess.run([sys.executable, "-m", "autograder", "release", name, "--no-check", "--course-dir",
                        str(template)], cwd=REPO, check=True, capture_output=True)
    release = nbformat.read(template / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    right = solve(release, source_nb(EX02))
    kinds = [right, replace_in_cell(right, "solution_training_bytes", "math.prod(input_shape) + ", ""), release,
             replace_in_cell(right, "solution_conv_params", "return (kernel", "return 1 / 0 + (kernel")]
    classes = {EX02: work / "class_ex02", EX09: work / "class_ex09"}
    for i in range(args.ex02):
        (classes[EX02] / f"s{i:03d}").mkdir(parents=True)
        nbformat.write(kinds[i % len(kinds)], classes[EX02] / f"s{i:03d}" / f"{EX02}.ipynb")
    if args.ex09:
        solved = solve(nbformat.read(template / "release" / EX09 / f"{EX09}.ipynb", as_version=4), source_nb(EX09))
        for i in range(args.ex09):
            folder = classes[EX09] / f"m{i:03d}" / EX09
            folder.mkdir(parents=True)
            nbformat.write(solved, folder / f"{EX09}.ipynb")
            shutil.copy2(model, folder / model.name)

    plain = {EX02: bare(kinds, work / "bare_ex02")} if args.ex02 else {}
    names = [name for name in names if counts[name]]  # the classes graded
    if args.ex09:
        plain[EX09] = bare([solved], work / "bare_ex09", [model])

    from distributed import LocalCluster

    ways = ("serial", "--workers 2", "Dask LocalCluster (2 workers), started for it",
            "the same Dask workers again (zygotes warm)")
    rounds, results = [], []
    for r in range(args.repeat):
        times = {}
        # A new cluster each round: a Dask worker keeps its zygotes (TensorFlow imported) from one command to
        # the next, which a command's first run on new workers does not find. The last way shows what that saves.
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            dask = ["--scheduler", cluster.scheduler_address]
            for i, (way, options) in enumerate(zip(ways, (["--workers", "1"], ["--workers", "2"], dask, dask))):
                course = work / f"way{i}-{r}"
                shutil.copytree(template, course)
                times[way] = {name: autograde(course, name, classes[name], *options) for name in names}
                results.append(grades(course))
                shutil.rmtree(course)
        rounds.append(times)
    assert all(r == results[0] for r in results), "grades differ"
    # each way's (wall, CPU) per class: the round with the shortest wall time
    rows = [(way, {name: min(t[way][name] for t in rounds) for name in names}) for way in ways]
    serial = sum(wall for wall, _ in rows[0][1].values())
    print(f"\nCPU: {machine.cpu()}; flags: {machine.flags()}")
    print(f"\n| way | ex02: {args.ex02} notebooks (s) | ex09: {args.ex09} notebooks (s) | total (s) | speed-up "
          "| machine's CPU (s) | cores busy |")
    print("|---|---|---|---|---|---|---|")
    for way, times in rows:
        total, cpu = (sum(t[i] for t in times.values()) for i in (0, 1))
        wall = {name: f"{times[name][0]:.1f}" if name in times else "-" for name in (EX02, EX09)}
        print(f"| {way} | {wall[EX02]} | {wall[EX09]} | {total:.1f} | {serial / total:.2f}x | {cpu:.1f} "
              f"| {cpu / total:.2f} |")
    print("\n| notebook | serial, per notebook (s) | plain nbclient run (s) | grader's overhead (s) "
          "| --workers 2, wall per notebook (s) |")
    print("|---|---|---|---|---|")
    for name in names:
        each = rows[0][1][name][0] / counts[name]
        print(f"| {name} | {each:.2f} | {plain[name]:.2f} | {each - plain[name]:.2f} "
              f"| {rows[1][1][name][0] / counts[name]:.2f} |")
    if args.repeat > 1:
        print(f"\neach time: the best of {args.repeat} rounds; total per round, in order:")
        for way in ways:
            print(f"- {way}: " + ", ".join(f"{sum(w for w, _ in t[way].values()):.1f}" for t in rounds) + " s")
    print(f"\ngrades identical in all {len(results)} runs")
    if args.json:
        Path(args.json).write_text(json.dumps({"ways": dict(rows), "rounds": rounds, "plain": plain}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
