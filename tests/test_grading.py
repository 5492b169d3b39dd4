"""The grading workflow end to end on exercise 2: real nbgrader commands through `python -m autograder`.

One temporary course folder: release exercise 2, then grade three submissions (correct, untouched,
wrong in one part) plus one unreadable file; export, feedback, reruns. The helpers here are shared
by the other grading tests (every assignment: test_grading_all.py; exercise 9: test_grading_ex09.py).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cli_runner
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
ASSIGNMENTS = sorted({p.parent.name for p in SOLUTIONS.glob("*/*.ipynb")})  # as `release --all` sees them
EX02 = "ex02_params_memory"
AUTO_POINTS, TOTAL_POINTS = 15.0, 18.0  # exercise 2: automatic tests, and with the written answer
REGIONS = [("BEGIN SOLUTION", "END SOLUTION"), ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS"),
           ("BEGIN MARK SCHEME", "END MARK SCHEME")]


def cli(*args: str, course: Path, timeout: int = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m autograder <args> --course-dir <course>` from the repository root (`env`: more variables;
    cli_runner.py: forked from a warm process unless $DCV_TEST_COMMANDS=subprocess)."""
    env = {k: v for k, v in os.environ.items() if k != "DCV_COURSE_DIR"} | (env or {})
    return cli_runner.run([*args, "--course-dir", str(course)], env=env, timeout=timeout)


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def secret_lines(nb) -> set[str]:
    """Lines of a source notebook that students must not see: solutions, hidden tests, mark schemes.

    A solution cell without delimiters is replaced whole by nbgrader, so all its lines are secret.
    Lines that also appear outside the secret regions (e.g. `return x` in a stub) are left out.
    """
    secret, public = set(), set()
    for cell in nb.cells:
        lines = cell.source.splitlines()
        delimited = any(begin in line for line in lines for begin, _ in REGIONS)
        if nbgrader_meta(cell).get("solution") and not delimited:
            secret.update(lines)
            continue
        inside = None
        for line in lines:
            starts = [end for begin, end in REGIONS if begin in line]
            if inside is None and starts:
                inside = starts[0]
            (secret if inside else public).add(line)
            if inside and inside in line:
                inside = None
    strip = lambda lines: {line.strip() for line in lines if line.strip()}
    return strip(secret) - strip(public)


def leaks(source_nb, released_path: Path) -> list[str]:
    """What of the source notebook's secrets (or outputs) shows in a released notebook."""
    raw = released_path.read_text()
    released = nbformat.reads(raw, as_version=4)
    lines = {line.strip() for cell in released.cells for line in cell.source.splitlines()}
    found = [f"delimiter {marker!r}" for pair in REGIONS for marker in pair if marker in raw]
    found += [f"secret line {line!r}" for line in sorted(secret_lines(source_nb) & lines)]
    found += [f"secret text {line!r} in the file" for line in sorted(secret_lines(source_nb))
              if len(line) >= 25 and json.dumps(line)[1:-1] in raw]
    found += [f"outputs in cell {cell.get('id')}" for cell in released.cells if cell.get("outputs")]
    return found


def solve(released, source):
    """The released notebook with every solution cell filled in from the source (by grade id)."""
    answers = {nbgrader_meta(c).get("grade_id"): c.source for c in source.cells}
    nb = copy.deepcopy(released)
    for cell in nb.cells:
        if nbgrader_meta(cell).get("solution"):
            lines = answers[nbgrader_meta(cell)["grade_id"]].splitlines()
            cell.source = "\n".join(l for l in lines if "BEGIN SOLUTION" not in l and "END SOLUTION" not in l)
    return nb


def replace_in_cell(nb, grade_id: str, old: str, new: str):
    """A copy of the notebook with `old` replaced by `new` in one cell (which must contain it)."""
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb.cells if nbgrader_meta(c).get("grade_id") == grade_id)
    assert old in cell.source
    cell.source = cell.source.replace(old, new)
    return nb


def source_nb(name: str):
    return nbformat.read(SOLUTIONS / name / f"{name}.ipynb", as_version=4)


def scores(course: Path, assignment: str) -> dict[str, float]:
    """Each student's total score in the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="dcv-cnn") as gb:
        return {s.student.id: s.score for s in gb.find_assignment(assignment).submissions}


# ---------------------------------------------------------------------------------------------
# the source notebooks


@pytest.mark.parametrize("source", sorted(SOLUTIONS.glob("*/*.ipynb")), ids=lambda p: p.name)
def test_source_notebook_follows_the_conventions(source):
    """Does the source have unique cell ids, no outputs, schema-3 metadata, telling grade ids and points?"""
    nb = nbformat.read(source, as_version=4)
    nbformat.validate(nb)
    ids = [cell.id for cell in nb.cells]
    assert len(ids) == len(set(ids)), "duplicate cell ids"
    assert not [c.id for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]
    graded = [c for c in nb.cells if nbgrader_meta(c)]
    grade_ids = [nbgrader_meta(c)["grade_id"] for c in graded]
    assert len(grade_ids) == len(set(grade_ids)), "duplicate grade ids"
    for cell in graded:
        meta = nbgrader_meta(cell)
        assert meta["schema_version"] == 3 and not re.fullmatch(r"cell-[0-9a-f]+", meta["grade_id"])
        if meta["grade"]:
            assert meta["points"] > 0, meta["grade_id"]
        if meta["grade"] and cell.cell_type == "code" and not meta["solution"]:
            assert cell.source.startswith("# "), f"{meta['grade_id']} must open with a comment line"
    total = sum(nbgrader_meta(c).get("points", 0) for c in graded if nbgrader_meta(c)["grade"])
    assert f"{total:g} in total" in nb.cells[0].source, "the intro states the total points"


def test_exercise_2_points():
    """Are exercise 2's 18 points split as 15 automatic (per sub-question) and 3 by hand?"""
    points = {nbgrader_meta(c)["grade_id"]: nbgrader_meta(c)["points"]
              for c in source_nb(EX02).cells if nbgrader_meta(c).get("grade")}
    assert sum(p for g, p in points.items() if g.startswith("test_")) == AUTO_POINTS
    assert points["answer_training_memory"] == TOTAL_POINTS - AUTO_POINTS
    assert points["test_training_bytes_visible"] + points["test_training_bytes_hidden"] == 3


# ---------------------------------------------------------------------------------------------
# release and validation


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("course")


def require_trained_artefacts(names: list[str] = ASSIGNMENTS) -> None:
    """Fail at once, naming them, when solutions' trained models are missing: never retrain here.

    The solutions stage (nbval on `solutions/`) trains each reference model once per run and saves
    it beside its source; grading tests only use what it saved.
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from autograder.cli import missing_artefacts

    missing = {name: files for name in names if (files := missing_artefacts(name))}
    if missing:
        what = "; ".join(f"solutions/{name}/{', '.join(files)}" for name, files in missing.items())
        pytest.fail(f"trained model(s) missing: {what}. The solutions stage saves them (it failed or did "
                    "not run): run `bash scripts/test.sh solutions` or `jupyter execute` the solution "
                    "notebook, then these tests", pytrace=False)


@pytest.fixture(scope="module")
def released(course) -> subprocess.CompletedProcess:
    """Exercise 2 released. Its source is not validated again: the solutions stage just ran it, every test
    passing (the validation step itself is tested below). Every assignment is released in test_grading_all.py."""
    result = cli("release", EX02, "--no-check", course=course)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (course / "release" / EX02 / f"{EX02}.ipynb").is_file()
    return result


METADATA_DAMAGE = {  # what a student could do to a graded cell's grading metadata
    "points as text": lambda m: m.update(points="ten"), "no grade id": lambda m: m.pop("grade_id"),
    "empty grade id": lambda m: m.update(grade_id=""), "an unknown key": lambda m: m.update(bonus=100),
    "grade not a flag": lambda m: m.update(grade=1), "negative points": lambda m: m.update(points=-1),
    "older schema": lambda m: m.update(schema_version=2), "newer schema": lambda m: m.update(schema_version=4)}


@pytest.mark.parametrize("damage", [None, *METADATA_DAMAGE])
def test_the_compiled_metadata_check_decides_as_nbgrader_does(damage):
    """Does the grader's metadata check (its schema compiled once) accept and refuse what nbgrader's does?"""
    sys.path.insert(0, str(REPO))
    from nbgrader.preprocessors import CheckCellMetadata as Nbgrader

    from autograder.grading import CheckCellMetadata

    nb = source_nb(EX02)
    if damage:
        graded = next(c for c in nb.cells if nbgrader_meta(c).get("grade"))
        METADATA_DAMAGE[damage](graded.metadata["nbgrader"])

    def verdict(check) -> str:
        try:
            check()(copy.deepcopy(nb), {})
        except Exception as exc:
            return type(exc).__name__
        return "valid"

    expected = verdict(Nbgrader)
    assert (expected == "valid") == (damage is None)
    assert verdict(CheckCellMetadata) == expected


@pytest.mark.slow
def test_release_validates_the_source_first(tmp_path):
    """Does `release` run the source notebook's tests (all must pass) before it releases it?"""
    result = cli("release", EX02, course=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok: source {EX02}.ipynb passes every test" in result.stdout
    assert (tmp_path / "release" / EX02 / f"{EX02}.ipynb").is_file()


def test_leak_check_would_notice_a_leak():
    """Would the leak check flag a notebook that still holds its solutions and hidden tests?"""
    found = leaks(source_nb(EX02), SOLUTIONS / EX02 / f"{EX02}.ipynb")
    assert any("BEGIN HIDDEN TESTS" in f for f in found)
    assert any("903400" in f for f in found)  # a hidden assertion
    assert any("(kernel * kernel * in_channels + 1) * filters" in f for f in found)  # a solution line


@pytest.mark.slow
def test_validation_catches_a_broken_source_and_a_giveaway_release(tmp_path):
    """Would `release` refuse a source whose tests fail, and `validate --released` a test that passes untouched?"""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from autograder.cli import validate

    broken = replace_in_cell(source_nb(EX02), "solution_conv_params", " + 1) * filters", ") * filters")
    nbformat.write(broken, tmp_path / f"{EX02}.ipynb")
    problem = validate(tmp_path / f"{EX02}.ipynb", released=False)
    assert problem.startswith("8 test cell(s) fail: '# Checks conv_params on the layers of the small network")
    # a "release" that still holds the solutions: every test passes untouched
    problem = validate(SOLUTIONS / EX02 / f"{EX02}.ipynb", released=True)
    assert problem.startswith("12 test cell(s) pass without any work: '# Checks")


@pytest.mark.slow
def test_released_notebook_fails_validation(released, course):
    """Does the untouched release fail nbgrader validate, and pass none of its tests (--invert)?"""
    notebook = course / "release" / EX02 / f"{EX02}.ipynb"
    plain = subprocess.run([sys.executable, "-m", "nbgrader", "validate", str(notebook)],
                           cwd=course, capture_output=True, text=True, timeout=900)
    # nbgrader validate exits 0 whatever the result: only its report tells (hence our CLI).
    assert plain.returncode == 0
    # 12 test cells, and the written answer left as "YOUR ANSWER HERE"
    assert "VALIDATION FAILED ON 13 CELL(S)" in " ".join(plain.stdout.split())
    inverted = cli("validate", EX02, "--released", course=course)
    assert inverted.returncode == 0, inverted.stderr
    assert f"ok: released {EX02}.ipynb passes no test untouched" in inverted.stdout


# ---------------------------------------------------------------------------------------------
# autograde, export, feedback


@pytest.fixture(scope="module")
def submissions(released, course, tmp_path_factory) -> Path:
    """alice: correct; bob: untouched (nested layout); carol: training_bytes wrong; dave: not JSON."""
    folder = tmp_path_factory.mktemp("collected")
    release = nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    correct = solve(release, source_nb(EX02))
    wrong = replace_in_cell(correct, "solution_training_bytes", "math.prod(input_shape) + ", "")
    for student, nb in {"alice": correct, "carol": wrong}.items():
        (folder / student).mkdir()
        nbformat.write(nb, folder / student / f"{EX02}.ipynb")
    (folder / "bob" / EX02).mkdir(parents=True)
    nbformat.write(release, folder / "bob" / EX02 / f"{EX02}.ipynb")
    (folder / "dave").mkdir()
    (folder / "dave" / f"{EX02}.ipynb").write_text('{"cells": [')
    return folder


@pytest.fixture(scope="module")
def autograded(submissions, course) -> subprocess.CompletedProcess:
    return cli("autograde", EX02, str(submissions), course=course)


@pytest.mark.slow
def test_autograde_gives_the_expected_scores(autograded, course):
    """Do correct, untouched and wrong-in-one-part submissions score 15, 0 and 12 of 15 automatic points?"""
    assert scores(course, EX02) == {"alice": AUTO_POINTS, "bob": 0.0, "carol": AUTO_POINTS - 3}
    table = {line.split()[0]: line.split()[1:3] for line in autograded.stdout.splitlines()
             if line.split()[:1] in (["alice"], ["bob"], ["carol"], ["dave"])}
    assert table == {"alice": ["15.0", "18.0"], "bob": ["0.0", "18.0"], "carol": ["12.0", "18.0"],
                     "dave": ["0.0", "18.0"]}


@pytest.mark.slow
def test_partial_credit_is_per_subquestion(autograded, course):
    """Does the wrong training_bytes lose exactly its own two test cells (1 + 2 points)?"""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="dcv-cnn") as gb:
        nb = gb.find_submission_notebook(EX02, EX02, "carol")
        lost = {g.name: g.max_score - g.score for g in nb.grades
                if g.auto_score is not None and g.score < g.max_score}
        manual = [g.name for g in nb.grades if g.needs_manual_grade]
    assert lost == {"test_training_bytes_visible": 1.0, "test_training_bytes_hidden": 2.0}
    assert manual == ["answer_training_memory"]


@pytest.mark.slow
def test_unreadable_submission_is_reported_and_others_graded(autograded, course):
    """Is a submission that is not notebook JSON reported in one line, scored 0, without a traceback?"""
    assert autograded.returncode == 1
    assert "Traceback" not in autograded.stderr
    assert f"autograder: dave: {EX02}.ipynb: not valid notebook JSON" in autograded.stderr
    assert autograded.stderr.rstrip().splitlines()[-1] == (
        "autograder: error: 1 submission(s) could not be read: dave (scored 0)")
    assert not (course / "submitted" / "dave").exists()


@pytest.mark.slow
def test_submissions_are_copied_not_moved(autograded, submissions, course):
    """Are the collected files left in place, and copied byte for byte into submitted/?"""
    assert (submissions / "alice" / f"{EX02}.ipynb").read_bytes() == (
        course / "submitted" / "alice" / EX02 / f"{EX02}.ipynb").read_bytes()
    assert (submissions / "bob" / EX02 / f"{EX02}.ipynb").is_file()
    assert (course / "submitted" / "bob" / EX02 / f"{EX02}.ipynb").is_file()


@pytest.fixture(scope="module")
def exported(autograded, course, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("export") / "grades.csv"
    result = cli("export", "--to", str(dest), course=course)
    assert result.returncode == 0, result.stderr
    return dest


@pytest.mark.slow
def test_export_csv_has_every_student(exported):
    """Does the exported CSV hold each student's score, 0 for the unreadable one, out of 18?"""
    with exported.open() as fh:
        rows = {row["student_id"]: row for row in csv.DictReader(fh) if row["assignment"] == EX02}
    assert {s: float(r["score"]) for s, r in rows.items()} == {
        "alice": AUTO_POINTS, "bob": 0.0, "carol": AUTO_POINTS - 3, "dave": 0.0}
    assert {float(r["max_score"]) for r in rows.values()} == {TOTAL_POINTS}


@pytest.mark.slow
def test_feedback_is_one_html_page_per_student(autograded, course):
    """Does `feedback` write one HTML page per graded student, without hidden tests or the rubric?"""
    result = cli("feedback", EX02, course=course)
    assert result.returncode == 0, result.stderr
    pages = sorted(p.relative_to(course / "feedback") for p in (course / "feedback").rglob("*.html"))
    assert pages == [Path(s, EX02, f"{EX02}.html") for s in ("alice", "bob", "carol")]
    html = (course / "feedback" / "carol" / EX02 / f"{EX02}.html").read_text()
    assert "test_training_bytes_hidden: failed (0 of 2 point(s))" in html
    assert "the exercise, batch of 50: 565,613,600 bytes" in html  # the failed assertion's message
    # nbgrader shows hidden tests in feedback (jupyter/nbgrader#917): autograder.feedback hides them
    assert "565613600" not in html and "14853600" not in html
    assert [p.parent.name for p in course.rglob("RUBRIC*")] == [], "instructor files copied out of solutions/"


@pytest.mark.slow
def test_rerun_never_loses_work_or_grades(autograded, submissions, course, tmp_path):
    """Does re-running autograde keep grades (manual ones too), and replace a changed submission only with --force?"""
    from nbgrader.api import Gradebook

    db = f"sqlite:///{course / 'gradebook.db'}"
    with Gradebook(db, course_id="dcv-cnn") as gb:  # what formgrader does when a grader gives 3/3
        grade = gb.find_grade("answer_training_memory", EX02, EX02, "alice")
        grade.manual_score = 3.0
        gb.db.commit()
    again = cli("autograde", EX02, str(submissions), course=course)
    assert "already graded: alice (same submission" in again.stdout
    assert scores(course, EX02) == {"alice": TOTAL_POINTS, "bob": 0.0, "carol": AUTO_POINTS - 3}

    # carol hands in a fixed notebook: kept aside without --force, graded with it
    fixed = tmp_path / "resubmitted"
    (fixed / "carol").mkdir(parents=True)
    (fixed / "alice").mkdir()
    release = nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    nbformat.write(solve(release, source_nb(EX02)), fixed / "carol" / f"{EX02}.ipynb")
    (fixed / "alice" / f"{EX02}.ipynb").write_bytes((submissions / "alice" / f"{EX02}.ipynb").read_bytes())
    kept = cli("autograde", EX02, str(fixed), course=course)
    assert kept.returncode == 0, kept.stderr
    assert "carol: differs from the submission collected before: kept the earlier one" in kept.stderr
    assert scores(course, EX02)["carol"] == AUTO_POINTS - 3

    forced = cli("autograde", EX02, str(fixed), "--force", course=course)
    assert forced.returncode == 0, forced.stderr
    assert scores(course, EX02) == {"alice": TOTAL_POINTS, "bob": 0.0, "carol": AUTO_POINTS}
    old = list(course.glob(f"superseded/*/carol/{EX02}/{EX02}.ipynb"))
    assert len(old) == 1 and old[0].read_bytes() == (submissions / "carol" / f"{EX02}.ipynb").read_bytes()
