"""Grading at scale: `--workers 2` and a 2-worker Dask `LocalCluster` give the grades of a serial run.

Three submissions of exercise 2 (correct, wrong in one part, untouched) are graded three times, in
three course folders: serially, by two local worker processes, and by a Dask cluster of two worker
processes on this machine (the same code reaches Slurm or Kubernetes workers through their
scheduler's address). Every grade of every cell must be the same.
"""

from __future__ import annotations

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
