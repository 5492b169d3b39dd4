"""Every assignment released and graded end to end: real nbgrader commands through `python -m autograder`.

One temporary course folder: `release --all`; each release is checked for leaks; then, for each
assignment, a correct submission (the solution's answers, and the files it hands in) must score every
automatic point, an untouched one none, and a `fool` none: its functions return an object that is equal
to anything and that NumPy's comparisons (`np.allclose`, `np.array_equal`...) call, by itself or as an
array of such objects. The helpers are test_grading.py's; exercise 9's students are in test_grading_ex09.py.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from test_grading import (
    ASSIGNMENTS,
    REPO,
    SOLUTIONS,
    cli,
    leaks,
    nbgrader_meta,
    require_trained_artefacts,
    scores,
    solve,
)

pytestmark = pytest.mark.usefixtures("shared_zygote")  # conftest.py: one warm zygote for the ten commands


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("course_all")


@pytest.fixture(scope="module")
def released(course) -> subprocess.CompletedProcess:
    """Every assignment released. The sources are not validated again: the solutions stage just ran each
    one with nbval, every test passing (the validation step itself is tested on exercise 2)."""
    require_trained_artefacts()
    result = cli("release", "--all", "--no-check", course=course)
    assert result.returncode == 0, result.stdout + result.stderr
    for source in sorted(SOLUTIONS.glob("*/*.ipynb")):
        assert (course / "release" / source.parent.name / source.name).is_file()
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_released_notebook_holds_no_solution_or_hidden_test(released, course, name):
    """Is every released notebook free of solution code, hidden tests, delimiters and outputs?"""
    sources = sorted((SOLUTIONS / name).glob("*.ipynb"))
    for source in sources:
        released_path = course / "release" / name / source.name
        assert leaks(nbformat.read(source, as_version=4), released_path) == []
    assert not list((course / "release" / name).glob("RUBRIC*")), "instructor files were released"


def auto_points(nb) -> float:
    """Points that nbgrader grades automatically: graded code cells (tests and autograded answers)."""
    return sum(nbgrader_meta(c).get("points", 0) for c in nb.cells
               if c.cell_type == "code" and nbgrader_meta(c).get("grade"))


def artefacts(name: str) -> dict[str, Path]:
    """Files a correct submission hands in beside its notebook (e.g. a saved model, declared in
    autograder/nbgrader_config.py), as the solution's own run left them in its source folder."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from autograder.cli import handed_in

    return {rel: SOLUTIONS / name / rel for rel in handed_in(name)}


# What a `fool` hands in: every function of the solution returns, given an array, a `Fool`, which is equal
# to (and smaller and larger than) anything, answers every NumPy function and ufunc with yes, and converts
# with np.asarray to an array of such objects shaped like that array; given anything else, an int whose ==
# always says yes. Against them, a test must compare plain numbers (dcv.grader.equals) or arrays of
# numbers (dcv.grader.numeric_array): with `np.allclose(lrn(a), expected)`, a `Fool` took every point of
# exercise 5's `lrn`.
FOOL = """import numpy  # (`np` is the assignment's: rebinding it would be flagged)


class Yes:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __lt__ = __le__ = __gt__ = __ge__ = __eq__

    def __bool__(self):
        return True

    def __hash__(self):
        return 0

    def __float__(self):
        return 0.0

    def __int__(self):
        return 0

    __index__ = __int__

    def __contains__(self, item):
        return True

    def __iter__(self):  # (else Python iterates with __getitem__, forever)
        raise TypeError("a Yes is not iterable")

    def __array_function__(self, func, types, args, kwargs):
        return Yes()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return Yes()

    def _yes(self, *args, **kwargs):
        return Yes()

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __pow__ = _yes
    __abs__ = __neg__ = __getitem__ = __call__ = _yes

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Yes()


class Fool(Yes):
    def __init__(self, like=None):
        try:
            self.shape = tuple(int(n) for n in like.shape)
        except Exception:
            self.shape = ()

    def __array__(self, dtype=None, copy=None):
        out = numpy.empty(self.shape, dtype=object)
        for i in range(out.size):
            out.flat[i] = Yes()
        return out


class AlwaysEqual(int):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = int.__hash__


def fooling_answer(*args):
    return Fool(args[0]) if args and hasattr(args[0], "shape") else AlwaysEqual(0)
"""


def fool(released, source):
    """The released notebook with every function the solution defines returning a `Fool` or an `AlwaysEqual`."""
    import ast

    nb = copy.deepcopy(released)
    answers = {nbgrader_meta(c).get("grade_id"): c.source for c in source.cells}
    for cell in nb.cells:
        if nbgrader_meta(cell).get("solution") and cell.cell_type == "code":
            names = [n.name for n in ast.parse(answers[nbgrader_meta(cell)["grade_id"]]).body
                     if isinstance(n, ast.FunctionDef)]
            cell.source = FOOL + "".join(
                f"\n\ndef {n}(*args, **kwargs):\n    return fooling_answer(*args)\n" for n in names)
    return nb


# Exercise 9's right and untouched submissions are graded in test_grading_ex09.py (alice and bob).
EVERY = [name for name in ASSIGNMENTS if name != "ex09_mnist"]


@pytest.fixture(scope="module")
def everyone(released, course, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Autograde, for every assignment, `right` (the solution's answers), `blank` (untouched) and `fool`
    (answers that are equal to anything, to NumPy too)."""
    def grade(name: str) -> subprocess.CompletedProcess:
        folder = tmp_path_factory.mktemp(f"all-{name}")
        release_dir = course / "release" / name
        right, blank = folder / "right" / name, folder / "blank" / name
        shutil.copytree(release_dir, right)
        shutil.copytree(release_dir, blank)
        for nb_path in sorted(release_dir.glob("*.ipynb")):
            release = nbformat.read(nb_path, as_version=4)
            source = nbformat.read(SOLUTIONS / name / nb_path.name, as_version=4)
            nbformat.write(solve(release, source), right / nb_path.name)
            (folder / "fool" / name).mkdir(parents=True, exist_ok=True)
            nbformat.write(fool(release, source), folder / "fool" / name / nb_path.name)
        for file_name, path in artefacts(name).items():
            shutil.copy2(path, right / file_name)
        return cli("autograde", name, str(folder), course=course)

    # two assignments at a time: most of a grading run is kernels starting, not computing
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(EVERY, pool.map(grade, EVERY)))


@pytest.mark.slow
@pytest.mark.parametrize("name", EVERY)
def test_every_assignment_scores_full_when_right_and_zero_when_untouched(everyone, course, name):
    """Does each assignment give its solution every automatic point, and an untouched notebook or answers
    that are equal to anything none?"""
    result = everyone[name]
    assert result.returncode == 0, result.stdout + result.stderr
    expected = sum(auto_points(nbformat.read(p, as_version=4)) for p in (SOLUTIONS / name).glob("*.ipynb"))
    assert expected > 0
    got = {student: score for student, score in scores(course, name).items()
           if student in ("right", "blank", "fool")}
    want = {"right": expected, "blank": 0.0, "fool": 0.0}
    assert got == want, result.stdout[-3000:]
    # a right answer draws no note but its written part's (a model's summary, styled HTML, is no finding)
    notes = {line.split(None, 3)[0]: line.split(None, 3)[3:] for line in result.stdout.splitlines()
             if line.split(None, 1)[:1] == ["right"]}
    assert notes == {"right": ["needs manual grading"]}, result.stdout[-3000:]
