"""`python -m autograder`: help, and bad input answered in one line with exit status 1 (no kernel runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cli_runner
import pytest
from test_grading import EX02, REPO, cli  # cli: `python -m autograder <args> --course-dir <course>`

COMMANDS = ["release", "validate", "collect", "autograde", "feedback", "export", "status"]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error line of a failed command, checking it failed cleanly."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("autograder: error: ")
    return lines[-1]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command, tmp_path):
    """Does `--help` work for the CLI and each of its commands?"""
    result = cli(*([command] if command else []), "--help", course=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m autograder")


@pytest.mark.parametrize("command", ["release", "validate", "feedback", "autograde"])
def test_unknown_assignment_is_named(command, tmp_path):
    """Is an unknown assignment refused with the list of known ones?"""
    extra = [str(tmp_path)] if command == "autograde" else []
    line = one_line_error(cli(command, "ex99_nope", *extra, course=tmp_path / "course"))
    assert "unknown assignment 'ex99_nope'" in line and EX02 in line


def test_release_needs_names_or_all(tmp_path):
    """Does `release` ask for assignment names or --all (not both, not neither)?"""
    assert "--all" in one_line_error(cli("release", course=tmp_path))
    assert "--all" in one_line_error(cli("release", EX02, "--all", course=tmp_path))


def test_missing_submissions_folder(tmp_path):
    """Is a submissions folder that does not exist reported?"""
    line = one_line_error(cli("autograde", EX02, str(tmp_path / "nowhere"), course=tmp_path / "course"))
    assert "does not exist" in line


def test_empty_submissions_folder(tmp_path):
    """Is an empty submissions folder (or one without the assignment) reported with the layouts expected?"""
    (tmp_path / "empty").mkdir()
    line = one_line_error(cli("autograde", EX02, str(tmp_path / "empty"), course=tmp_path / "course"))
    assert f"no gradable submission of {EX02}" in line and f"<student_id>/{EX02}.ipynb" in line
    (tmp_path / "other" / "alice").mkdir(parents=True)
    (tmp_path / "other" / "alice" / "ex03.ipynb").write_text("{}")
    result = cli("autograde", EX02, str(tmp_path / "other"), course=tmp_path / "course")
    assert "no gradable submission" in one_line_error(result)
    assert f"autograder: alice: no {EX02}.ipynb or {EX02}/*.ipynb (found ex03.ipynb): skipped" in result.stderr


def test_only_unreadable_submissions(tmp_path):
    """Are submissions that are not notebooks named, and nothing copied?"""
    for student, text in {"ann": "not json", "ben": '{"a": 1}'}.items():
        (tmp_path / "in" / student).mkdir(parents=True)
        (tmp_path / "in" / student / f"{EX02}.ipynb").write_text(text)
    result = cli("autograde", EX02, str(tmp_path / "in"), course=tmp_path / "course")
    assert "no gradable submission" in one_line_error(result)
    assert f"autograder: ann: {EX02}.ipynb: not valid notebook JSON" in result.stderr
    assert f"autograder: ben: {EX02}.ipynb: not a Jupyter notebook" in result.stderr
    assert not (tmp_path / "course" / "submitted").exists()


def test_autograde_before_release(tmp_path):
    """Does autograding an assignment not yet released say to release it first?"""
    (tmp_path / "in" / "alice").mkdir(parents=True)
    (tmp_path / "in" / "alice" / f"{EX02}.ipynb").write_text(
        '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    line = one_line_error(cli("autograde", EX02, str(tmp_path / "in"), course=tmp_path / "course"))
    assert f"run `python -m autograder release {EX02}`" in line


@pytest.mark.parametrize("args, expected", [
    (["export"], "no gradebook"),
    (["feedback", EX02], "is not released"),
    (["validate", EX02, "--released"], "is not released"),
])
def test_steps_out_of_order(args, expected, tmp_path):
    """Do export, feedback and validation of a release say what to run first in a new course folder?"""
    assert expected in one_line_error(cli(*args, course=tmp_path))


def test_course_dir_must_be_a_folder(tmp_path):
    """Is a --course-dir that is a file refused?"""
    (tmp_path / "file").write_text("")
    assert "is not a folder" in one_line_error(cli("status", course=tmp_path / "file"))


@pytest.mark.parametrize("args", [["status"], ["status", EX02], ["export"], ["feedback", EX02], ["autograde", EX02],
                                  ["release", EX02, "--no-check"]],
                         ids=" ".join)
def test_a_damaged_gradebook_is_named_and_left_as_it_is(args, tmp_path):
    """A gradebook.db that is not a database (a bad copy, a full disk): does each command that reads it say so in
    one line, with what to do, and leave the file as it was?"""
    damaged = b"SQLite format 2\x00" + bytes(range(256)) * 16
    (tmp_path / "gradebook.db").write_bytes(damaged)
    line = one_line_error(cli(*args, course=tmp_path))
    assert line == (f"autograder: error: the gradebook {tmp_path.resolve() / 'gradebook.db'} cannot be used (file is "
                    "not a database): it is damaged: restore it from a copy (nbgrader keeps none), or move it away "
                    "and release the assignments again to start an empty one")
    assert (tmp_path / "gradebook.db").read_bytes() == damaged


def test_status_of_a_new_course(tmp_path):
    """Does `status` list the assignments of solutions/ for a new course folder, and write its config?"""
    result = cli("status", course=tmp_path)
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:2] == [EX02, "no"] for line in result.stdout.splitlines())
    assert "load_subconfig(" in (tmp_path / "nbgrader_config.py").read_text()


@pytest.mark.parametrize("before", [True, False], ids=["before-command", "after-command"])
def test_course_dir_is_honoured_before_or_after_the_command(before, tmp_path):
    """Does `--course-dir` pick the course folder wherever it stands on the command line?"""
    course = tmp_path / "course"
    env = {k: v for k, v in os.environ.items() if k != "DCV_COURSE_DIR"}
    args = ["--course-dir", str(course), "status"] if before else ["status", "--course-dir", str(course)]
    result = cli_runner.run(args, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (course / "nbgrader_config.py").is_file()


def test_release_of_a_source_whose_trained_model_is_missing(tmp_path, monkeypatch):
    """Is a source without the model its run saves (fresh clone) refused with how to make it, before any kernel runs?"""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from autograder import cli as app

    solutions = tmp_path / "solutions" / "ex09_mnist"
    solutions.mkdir(parents=True)
    (solutions / "ex09_mnist.ipynb").write_bytes((REPO / "solutions/ex09_mnist/ex09_mnist.ipynb").read_bytes())
    monkeypatch.setattr(app, "SOURCE", tmp_path / "solutions")
    monkeypatch.setattr(app, "REPO", tmp_path)
    assert app.missing_artefacts("ex09_mnist") == ["mnist_model.keras"]
    assert app.missing_artefacts("ex02_params_memory") == []
    with pytest.raises(app.Failure, match=r"source ex09_mnist: mnist_model.keras missing: .*"
                                          r"`jupyter execute solutions/ex09_mnist/ex09_mnist.ipynb`"):
        app.check(tmp_path / "course", "ex09_mnist", released=False)


def test_a_new_gradebook_is_the_one_nbgrader_makes(tmp_path):
    """Is the gradebook `release` starts (stamped in-process, no `alembic` run) what nbgrader makes itself:
    the same tables, the revision nbgrader's `alembic heads` gives, and usable by nbgrader?"""
    sys.path.insert(0, str(REPO))
    from nbgrader.api import Gradebook, get_alembic_version
    from sqlalchemy import inspect, text

    from autograder.cli import new_gradebook

    ours, theirs = tmp_path / "ours" / "gradebook.db", tmp_path / "theirs" / "gradebook.db"
    ours.parent.mkdir()
    theirs.parent.mkdir()
    new_gradebook(ours)
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env_path  # nbgrader runs `alembic`
    try:
        books = {}
        for db in (ours, theirs):
            with Gradebook(f"sqlite:///{db}") as gb:
                gb.add_assignment("a1")
                version = gb.db.execute(text("SELECT * FROM alembic_version")).all()
                books[db] = (sorted(inspect(gb.engine).get_table_names()), version)
        assert books[ours] == books[theirs]
        assert books[ours][1] == [(get_alembic_version(),)]
    finally:
        os.environ["PATH"] = env_path
    assert not list(ours.parent.glob(".*")), "no temporary file left beside it"


def test_a_forked_command_answers_as_a_new_interpreter(tmp_path, monkeypatch):
    """Does a command the tests fork from their warm server (cli_runner.py) give what `python -m autograder`
    in a new interpreter gives: the same exit status, output and files, and the variables of the test?"""
    (tmp_path / "in" / "alice").mkdir(parents=True)
    (tmp_path / "in" / "alice" / "notes.txt").write_text("no notebook")
    commands = [["status"], ["release", EX02, "--no-check"], ["status", EX02], ["release", "nope"],
                ["autograde", EX02, str(tmp_path / "in")], ["export"], ["feedback", "--help"]]
    seen = {}
    for way in cli_runner.MODES:
        monkeypatch.setenv("DCV_TEST_COMMANDS", way)
        course = tmp_path / way
        answers = [cli(*args, course=course) for args in commands]
        by_variable = tmp_path / f"{way}-by-variable"  # the command's environment is the one it is given
        answers.append(cli_runner.run(["status"], env={**os.environ, "DCV_COURSE_DIR": str(by_variable)}, timeout=300))
        assert (by_variable / "nbgrader_config.py").is_file()
        seen[way] = ([(a.returncode, a.stdout.replace(str(course), "COURSE"), a.stderr.replace(str(course), "COURSE"))
                      for a in answers], sorted(str(p.relative_to(course)) for p in course.rglob("*")))
    assert [code for code, _, _ in seen["fork"][0]] == [0, 0, 0, 1, 1, 0, 0, 0]
    assert seen["fork"] == seen["subprocess"]
    monkeypatch.setenv("DCV_TEST_COMMANDS", "spawn")
    with pytest.raises(ValueError, match="DCV_TEST_COMMANDS"):
        cli("status", course=tmp_path / "spawn")
