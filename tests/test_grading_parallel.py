"""Grading at scale: `--workers 2` and a 2-worker Dask `LocalCluster` give the grades of a serial run.

Three submissions of exercise 2 (correct, wrong in one part, untouched) are graded three times, in
three course folders: serially, by two local worker processes, and by a Dask cluster of two worker
processes on this machine (the same code reaches Slurm or Kubernetes workers through their
scheduler's address). Every grade of every cell must be the same.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from test_grading import EX02, cli, replace_in_cell, solve, source_nb

pytestmark = pytest.mark.slow


def cell_grades(course: Path) -> dict[tuple[str, str], tuple[float | None, bool]]:
    """(student, grade id) -> (automatic score, needs manual grading), for every cell of the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="dcv-cnn") as gb:
        return {(s.student.id, g.name): (g.auto_score, g.needs_manual_grade)
                for s in gb.find_assignment(EX02).submissions for nb in s.notebooks for g in nb.grades}


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> tuple[Path, Path]:
    """A released course folder (copied for each run) and the three submissions."""
    template = tmp_path_factory.mktemp("parallel_course")
    result = cli("release", EX02, "--no-check", course=template)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path_factory.mktemp("parallel_collected")
    release = nbformat.read(template / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    right = solve(release, source_nb(EX02))
    class_ = {"ann": right, "ben": replace_in_cell(right, "solution_training_bytes", "math.prod(input_shape) + ", ""),
              "cas": release}
    for student, nb in class_.items():
        (folder / student).mkdir()
        nbformat.write(nb, folder / student / f"{EX02}.ipynb")
    return template, folder


def graded_course(template: Path, folder: Path, tmp_path: Path, *options: str) -> tuple[Path, str]:
    import shutil

    course = tmp_path / "course"
    shutil.copytree(template, course)
    result = cli("autograde", EX02, str(folder), *options, course=course)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Warning" not in result.stderr, result.stderr[-3000:]  # the instructor sees nothing to worry about
    return course, result.stdout


def test_workers_and_dask_give_the_serial_grades(collected, tmp_path):
    """Do `--workers 2` and a 2-worker Dask LocalCluster record exactly the grades of a serial run?"""
    from distributed import LocalCluster

    template, folder = collected
    serial, _ = graded_course(template, folder, tmp_path / "serial", "--workers", "1")
    expected = cell_grades(serial)
    assert {s for s, _ in expected} == {"ann", "ben", "cas"}
    assert sum(score or 0 for (s, _), (score, _) in expected.items() if s == "ann") == 15.0
    assert sum(score or 0 for (s, _), (score, _) in expected.items() if s == "ben") == 12.0
    parallel, out = graded_course(template, folder, tmp_path / "parallel", "--workers", "2")
    assert cell_grades(parallel) == expected
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask, out = graded_course(template, folder, tmp_path / "dask", "--scheduler", cluster.scheduler_address)
    assert cell_grades(dask) == expected
    for course in (parallel, dask):  # the graded notebooks came back as data, written by this machine
        assert sorted(p.parent.parent.name for p in course.glob(f"autograded/*/{EX02}/{EX02}.ipynb")) == [
            "ann", "ben", "cas"]


def test_a_failed_worker_loses_nothing_and_is_said(collected, tmp_path, monkeypatch, capsys):
    """When grading fails on a worker (not the student's fault: a lost Dask worker, a full disk), is the
    submission said NOT GRADED, the command's exit status 1, and is it graded by the next run?"""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from autograder import cli as autograder_cli
    from autograder import executors

    template, folder = collected
    course = tmp_path / "course"
    shutil.copytree(template, course)

    def lost(jobs, on_result, **_):  # every worker dies: as executors.run reports it
        for job in jobs:
            on_result(job, executors.failed(job, OSError("worker lost\n(its log said more)")))

    monkeypatch.setattr(executors, "run", lost)
    assert autograder_cli.main(["autograde", EX02, str(folder), "--course-dir", str(course)]) == 1
    out, err = capsys.readouterr()
    assert out.count("NOT GRADED") == 3 and "grading failed on its worker: OSError: worker lost (its log" in out
    assert err.strip().splitlines()[-1].startswith(
        "autograder: error: 3 submission(s) could not be graded, through no fault of theirs: ann, ben, cas")
    assert not list(course.glob("autograded/*"))
    monkeypatch.undo()
    again, out = graded_course(template, folder, tmp_path / "again", "--workers", "1")
    rerun = cli("autograde", EX02, course=course)  # what the first run collected into submitted/
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "already graded" not in rerun.stdout and "NOT GRADED" not in rerun.stdout
    assert cell_grades(course) == cell_grades(again)


def test_a_kernel_that_cannot_start_keeps_the_grade_before(collected, tmp_path, monkeypatch, capsys):
    """When a notebook's kernel cannot start or be reached (the grader's failure: a broken machine, a
    temporary folder too long for its sockets), is the submission NOT GRADED, with why, rather than
    scored 0, the grade recorded before kept, and the student graded by the next run?"""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from autograder import cli as autograder_cli
    from autograder import grading

    template, folder = collected
    course = tmp_path / "course"
    shutil.copytree(template, course)
    monkeypatch.setenv("DCV_COURSE_DIR", str(course))  # main() sets it: put back when the test ends
    run = ["autograde", EX02, str(folder), "--course-dir", str(course), "--workers", "1"]
    assert autograder_cli.main(run) == 0
    before = cell_grades(course)

    def unreachable(self, nb, resources=None, km=None):
        raise RuntimeError("Kernel didn't respond in 60 seconds")

    with monkeypatch.context() as patched:
        patched.setattr(grading.SandboxedExecute, "preprocess", unreachable)
        capsys.readouterr()
        assert autograder_cli.main([*run, "--force"]) == 1
    out, err = capsys.readouterr()
    assert out.count("NOT GRADED") == 3, out
    assert "could not be run (RuntimeError: Kernel didn't respond in 60 seconds)" in out
    assert "could not be graded, through no fault of theirs: ann, ben, cas" in err
    assert cell_grades(course) == before
    assert autograder_cli.main(run) == 0  # graded again: it was not recorded as graded
    out, _ = capsys.readouterr()
    assert "already graded" not in out and out.count("NOT GRADED") == 0
    assert cell_grades(course) == before


def test_a_long_temporary_folder_is_not_used_for_the_kernels_sockets(collected, tmp_path):
    """A kernel's sockets are files under the temporary folder, whose paths hold 107 bytes at most: with
    $TMPDIR 60 characters long, does the command say so, use /tmp, and grade as always?"""
    import shutil
    import tempfile

    template, folder = collected
    course = tmp_path / "course"
    shutil.copytree(template, course)
    long = Path(tempfile.mkdtemp(prefix="dcv-test-long-")) / ("x" * 40)
    long.mkdir()
    try:
        result = cli("autograde", EX02, str(folder), course=course, env={"TMPDIR": str(long)})
    finally:
        shutil.rmtree(long.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"autograder: {long} is too long a path for the kernels' sockets: using /tmp" in result.stderr
    assert {s: sum(g or 0 for (who, _), (g, _) in cell_grades(course).items() if who == s)
            for s in ("ann", "ben", "cas")} == {"ann": 15.0, "ben": 12.0, "cas": 0.0}


# Runs `python -m autograder` in this process's child, and prints that process's peak memory at exit:
# VmHWM, its own since exec (ru_maxrss also counts the memory of the process that forked it).
PEAK = """
import atexit, runpy, sys
peak = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) // 1024
atexit.register(lambda: print(f"peak MB {peak()}"))
sys.argv = ["autograder", *sys.argv[1:]]
runpy.run_module("autograder", run_name="__main__")
"""


@pytest.mark.usefixtures("shared_zygote")  # conftest.py: this process's warm zygote, not one importing TensorFlow anew
def test_a_class_of_large_models_is_never_all_in_memory(tmp_path):
    """Exercise 9's students hand in a model file: with 4 of 60 MB (240 MB; a class of exercise 10 is
    14 MB a student), does the command read each when it grades it, its peak memory far below the class's?"""
    import subprocess
    import sys

    from test_grading import REPO

    course = tmp_path / "course"
    assert cli("release", "ex09_mnist", "--no-check", course=course).returncode == 0
    for i in range(4):
        folder = tmp_path / "class" / f"big{i}" / "ex09_mnist"
        folder.mkdir(parents=True)
        nbformat.write(nbformat.read(course / "release" / "ex09_mnist" / "ex09_mnist.ipynb", as_version=4),
                       folder / "ex09_mnist.ipynb")
        (folder / "mnist_model.keras").write_bytes(bytes([i]) * 60_000_000)
    done = subprocess.run([sys.executable, "-c", PEAK, "autograde", "ex09_mnist", str(tmp_path / "class"),
                           "--course-dir", str(course), "--workers", "2"], cwd=REPO, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "DCV_COURSE_DIR"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (course / "submitted" / "big3" / "ex09_mnist" / "mnist_model.keras").stat().st_size == 60_000_000
    peak = int(done.stdout.split("peak MB ")[-1])
    assert peak < 260, f"the command held {peak} MB: the class's files were read all at once"  # 164 MB; before: 508
