"""`python -m autograder collect`: an LMS download (zip) sorted into submitted/, every problem reported.

No kernel runs: exercise 2 is released (without validation) into a temporary course folder, its due
date set, then a zip of files named `<student>_<timestamp>_<file>` is collected.
"""

from __future__ import annotations

import json
import zipfile

import nbformat
import pytest
from test_grading import EX02, cli, solve, source_nb

PATTERN = r"(?P<student_id>[a-z]+)_(?P<timestamp>\d{8}T\d{6})_(?P<file_id>[\w ]+)\.ipynb"


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    course = tmp_path_factory.mktemp("collect_course")
    assert cli("release", EX02, "--no-check", course=course).returncode == 0
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="dcv-cnn") as gb:
        gb.update_or_create_assignment(EX02, duedate="2026-12-01 00:00:00 UTC")
    release = nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    right, blank = nbformat.writes(solve(release, source_nb(EX02))), nbformat.writes(release)
    archive = tmp_path_factory.mktemp("lms") / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"ann_20261130T100000_{EX02}.ipynb", blank)       # first try, on time
        zf.writestr(f"ann_20261202T090000_{EX02}.ipynb", right)       # second try, late: kept
        zf.writestr(f"ben_20261130T120000_{EX02}.ipynb", '{"cells": [')  # not JSON
        zf.writestr("cas_20261130T080000_Exercise 2.ipynb", right)    # another name
        zf.writestr("README.txt", "exported by the LMS")               # matches no student
    result = cli("collect", EX02, str(archive), "--pattern", PATTERN, course=course)
    return course, result


def test_lms_zip_is_sorted_into_submitted(collected):
    """Is each student's newest file copied into submitted/<student>/<assignment>/, with its timestamp?"""
    course, result = collected
    ann = course / "submitted" / "ann" / EX02
    assert (ann / "timestamp.txt").read_text().strip() == "20261202T090000"
    assert "YOUR CODE HERE" not in (ann / f"{EX02}.ipynb").read_text()  # the later (solved) file
    assert (course / "submitted" / "cas" / EX02 / f"{EX02}.ipynb").is_file()
    assert not (course / "submitted" / "ben").exists()


def test_every_problem_is_reported(collected):
    """Are the duplicate, the late one, the unreadable one, the renamed one and the stray file all reported?"""
    course, result = collected
    assert result.returncode == 1 and "Traceback" not in result.stderr
    err = result.stderr
    assert f"ann: ann_20261130T100000_{EX02}.ipynb and ann_20261202T090000_{EX02}.ipynb are both " \
           f"{EX02}.ipynb: kept ann_20261202T090000_{EX02}.ipynb (the later one)" in err
    assert "README.txt: does not match --pattern" in err
    assert f"ben: {EX02}.ipynb: not valid notebook JSON" in err
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.split()}
    assert "late: submitted 2026-12-02 09:00, 33.0 h after the due date" in lines["ann"]
    assert "notebook handed in as 'Exercise 2.ipynb'" in lines["cas"]
    assert "unreadable" in lines["ben"]
    assert json.loads((course / "collect" / EX02 / "ann.json").read_text())[0].startswith("late:")
    assert err.rstrip().splitlines()[-1] == "autograder: error: 1 submission(s) could not be read: ben (scored 0)"


def test_unsafe_zip_is_refused(tmp_path):
    """Is a zip with a path leading outside its folder refused in one line, before anything is copied?"""
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escaped.ipynb", "{}")
    result = cli("collect", EX02, str(archive), course=tmp_path / "course")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "holds a path outside its folder: '../../escaped.ipynb'" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path.parent / "escaped.ipynb").exists()


def test_a_damaged_file_in_a_zip_is_reported_and_the_others_collected(tmp_path):
    """An LMS download cut short or damaged: is each file that cannot be read out of the zip named (a
    deflate error, a wrong CRC), no traceback, while the students whose files are whole are collected?"""
    course = tmp_path / "course"
    assert cli("release", EX02, "--no-check", course=course).returncode == 0
    release = nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    right = nbformat.writes(solve(release, source_nb(EX02)))
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"ann/{EX02}.ipynb", right)
        zf.writestr(f"bob/{EX02}.ipynb", right, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(f"cy/{EX02}.ipynb", right)  # stored: its bytes change, its CRC no longer matches
    data = bytearray(archive.read_bytes())
    for who in (b"bob/", b"cy/"):
        start = data.index(who + EX02.encode()) + 200
        data[start:start + 16] = bytes(b ^ 0xFF for b in data[start:start + 16])
    archive.write_bytes(bytes(data))
    result = cli("collect", EX02, str(archive), course=course)
    assert "Traceback" not in result.stderr, result.stderr
    assert (course / "submitted" / "ann" / EX02 / f"{EX02}.ipynb").read_text() == right
    assert f"bob/{EX02}.ipynb: cannot be read out of download.zip (Error -3 while decompressing data" in result.stderr
    assert f"cy/{EX02}.ipynb: cannot be read out of download.zip (Bad CRC-32" in result.stderr
    assert "download the archive again" in result.stderr
    assert not (course / "submitted" / "bob").exists() and not (course / "submitted" / "cy").exists()


def test_a_handed_in_model_is_taken_from_beside_a_lone_notebook(tmp_path):
    """Exercise 9's students hand in mnist_model.keras: is it collected whether the notebook lies in
    <student>/ or <student>/ex09_mnist/, and does a note name it where it is missing (never dropped
    silently)?"""
    import sys

    from test_grading import REPO

    sys.path.insert(0, str(REPO))
    from autograder.submissions import find_submissions

    notebook = nbformat.writes(nbformat.v4.new_notebook())
    layouts = {"flat": "", "nested": "ex09_mnist/"}
    for student, where in layouts.items():
        (tmp_path / student / where).mkdir(parents=True, exist_ok=True)
        (tmp_path / student / where / "ex09_mnist.ipynb").write_text(notebook)
        (tmp_path / student / where / "mnist_model.keras").write_bytes(b"model")
    (tmp_path / "nomodel").mkdir()
    (tmp_path / "nomodel" / "My exercise 9.ipynb").write_text(notebook)
    found, problems, notes = find_submissions(tmp_path, "ex09_mnist", ["ex09_mnist.ipynb"], ["mnist_model.keras"])
    assert problems == []
    for student in layouts:
        assert sorted(found[student]) == ["ex09_mnist.ipynb", "mnist_model.keras"], found[student]
        assert found[student]["mnist_model.keras"].read_bytes() == b"model"
        assert student not in notes
    assert sorted(found["nomodel"]) == ["ex09_mnist.ipynb"]
    assert "mnist_model.keras not handed in: the tests that load it score 0" in notes["nomodel"]


def test_a_timestamp_beside_a_lone_notebook_is_kept_and_its_lateness_said(collected, tmp_path):
    """nbgrader's timestamp.txt beside <student>/<assignment>.ipynb (not only in <student>/<assignment>/):
    is it collected, and is a late one said, in both layouts?"""
    course, _ = collected
    release = nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    for student, where in {"flat": "", "nested": f"{EX02}/"}.items():
        (tmp_path / student / where).mkdir(parents=True, exist_ok=True)
        nbformat.write(release, tmp_path / student / where / f"{EX02}.ipynb")
        (tmp_path / student / where / "timestamp.txt").write_text("2026-12-01 06:30:00 UTC\n")
    result = cli("collect", EX02, str(tmp_path), course=course)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.split()}
    for student in ("flat", "nested"):
        kept = course / "submitted" / student / EX02 / "timestamp.txt"
        assert kept.read_text().strip() == "2026-12-01 06:30:00 UTC", student
        assert "late: submitted 2026-12-01 06:30, 6.5 h after the due date" in lines[student], result.stdout


def test_symbolic_links_are_never_followed(tmp_path):
    """A student's folder (a cloned repository keeps links) may hold links to any file the instructor can
    read: the solution with its hidden tests, another student's work. Is each link reported and left
    out, by `collect` and by `autograde` reading submitted/, while the student's own files are taken?"""
    course = tmp_path / "course"
    assert cli("release", EX02, "--no-check", course=course).returncode == 0
    secret = tmp_path / "secret" / EX02
    secret.mkdir(parents=True)
    (secret / f"{EX02}.ipynb").write_text(nbformat.writes(source_nb(EX02)))  # the source: hidden tests
    notebook = nbformat.writes(nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4))
    folder = tmp_path / "class"
    (folder / "eve" / EX02).mkdir(parents=True)
    (folder / "eve" / EX02 / f"{EX02}.ipynb").write_text(notebook)
    (folder / "eve" / EX02 / "notes.txt").symlink_to(secret / f"{EX02}.ipynb")  # read by her code
    (folder / "eve" / EX02 / "data").symlink_to(secret, target_is_directory=True)
    (folder / "mal").mkdir()
    (folder / "mal" / EX02).symlink_to(secret, target_is_directory=True)  # the solution as her work
    (folder / "ned").mkdir()
    (folder / "ned" / f"{EX02}.ipynb").symlink_to(secret / f"{EX02}.ipynb")
    (folder / "zoe").symlink_to(secret.parent, target_is_directory=True)
    result = cli("collect", EX02, str(folder), course=course)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    err = result.stderr
    assert f"eve: {EX02}/data, {EX02}/notes.txt: symbolic link(s), not followed: left out" in err
    assert f"mal: {EX02}: symbolic link(s), not followed: left out" in err
    assert f"ned: {EX02}.ipynb: symbolic link(s), not followed: left out" in err
    assert "zoe: a symbolic link: not followed, skipped" in err
    assert sorted(p.name for p in (course / "submitted").iterdir()) == ["eve"]
    assert sorted(p.name for p in (course / "submitted" / "eve" / EX02).iterdir()) == [f"{EX02}.ipynb"]
    assert "left out, symbolic link(s)" in result.stdout

    # a link put into submitted/ by other means: autograde skips that student, says so, runs nothing
    for student in ("eve",):
        target = course / "submitted" / student / EX02 / f"{EX02}.ipynb"
        target.unlink()
        target.symlink_to(secret / f"{EX02}.ipynb")
    result = cli("autograde", EX02, course=course)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"eve: {EX02}.ipynb: symbolic link(s) in submitted/, not followed: skipped" in result.stderr
    assert "nothing collected for" in result.stderr.strip().splitlines()[-1]

    # an LMS download unpacked by hand: a link among its files is reported, not collected
    lms = tmp_path / "lms"
    lms.mkdir()
    (lms / f"amy_20261130T100000_{EX02}.ipynb").write_text(notebook)
    (lms / f"bob_20261130T100000_{EX02}.ipynb").symlink_to(secret / f"{EX02}.ipynb")
    result = cli("collect", EX02, str(lms), "--pattern", PATTERN, course=course)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert f"bob_20261130T100000_{EX02}.ipynb: a symbolic link: not followed, not collected" in result.stderr
    assert (course / "submitted" / "amy" / EX02 / f"{EX02}.ipynb").is_file()
    assert not (course / "submitted" / "bob").exists()


def test_a_notebook_nested_too_deeply_is_reported_not_a_traceback(tmp_path):
    """JSON nested 100,000 deep makes Python's parser give up (RecursionError): is it one reported line?"""
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / f"{EX02}.ipynb").write_text("[" * 100_000 + "]" * 100_000)
    result = cli("collect", EX02, str(tmp_path), course=tmp_path / "course")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert (f"deep: {EX02}.ipynb: not a readable notebook (its JSON is nested too deeply): skipped, scored 0"
            in result.stderr)


def test_a_file_name_never_writes_escape_sequences_to_the_terminal(tmp_path):
    """A file name in an LMS download is the student's choice: printed as it is, "\\x1b]0;...\\x07" would
    retitle the instructor's terminal (and worse sequences exist). Is every control character shown as "?"?"""
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("\x1b]0;owned\x07\x1b[2Jeve_notes.ipynb", "{}")
    result = cli("collect", EX02, str(archive), "--pattern", PATTERN, course=tmp_path / "course")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "?]0;owned??[2Jeve_notes.ipynb: does not match --pattern" in result.stderr
    assert not any(c in result.stdout + result.stderr for c in "\x1b\x07")
