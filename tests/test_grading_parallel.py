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
