"""The one writer of the course folder: assignment definitions out of the gradebook, results into it.

Results of `grading.grade` are merged here, one at a time, each in its own transaction: the graded
folder (`autograded/<student>/<assignment>/`, replaced whole), the gradebook's grades and comments
(manual grades are kept), then `grading/<assignment>/<student>.json` (the outcome and its reasons,
written last: a run interrupted before it grades that student again).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

from .grading import Result

STATUS_FOLDER = "grading"


def definition(gb, name: str) -> dict:
    """The assignment as the gradebook holds it: notebooks, cells, points, locked sources (data)."""
    from sqlalchemy import text

    a = gb.find_assignment(name)
    version = gb.db.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return {"name": a.name, "duedate": a.duedate.isoformat() if a.duedate else None,
            "alembic_version": version, "notebooks": [{
        "name": nb.name, "kernelspec": nb.kernelspec,
        "grade_cells": [{"name": c.name, "max_score": c.max_score, "cell_type": c.cell_type} for c in nb.grade_cells],
        "solution_cells": [c.name for c in nb.solution_cells],
        "task_cells": [{"name": c.name, "max_score": c.max_score, "cell_type": c.cell_type} for c in nb.task_cells],
        "source_cells": [{"name": c.name, "cell_type": c.cell_type, "locked": c.locked, "source": c.source,
                          "checksum": c.checksum} for c in nb.source_cells],
    } for nb in a.notebooks]}


def status_path(course: Path, name: str, student: str) -> Path:
    return course / STATUS_FOLDER / name / f"{student}.json"


def read_status(course: Path, name: str, student: str) -> dict | None:
    """The recorded outcome of a student's last grading, or None."""
    try:
        return json.loads(status_path(course, name, student).read_text())
    except (OSError, ValueError):
        return None


def write_status(course: Path, name: str, student: str, **fields) -> None:
    """Record a student's outcome atomically."""
    path = status_path(course, name, student)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"student": student, "assignment": name,
                               "recorded": datetime.datetime.now().isoformat(timespec="seconds"), **fields},
                              indent=1))
    os.replace(tmp, path)


def replace_folder(dest: Path, files: dict[str, bytes]) -> None:
    """Make `dest` hold exactly `files`, swapping a complete new folder in."""
    new = dest.with_name(dest.name + ".new")
    old = dest.with_name(dest.name + ".old")
    for leftover in (new, old):
        shutil.rmtree(leftover, ignore_errors=True)
    for rel, data in files.items():
        (new / rel).parent.mkdir(parents=True, exist_ok=True)
        (new / rel).write_bytes(data)
    new.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def record(course: Path, gb, result: Result, files: dict[str, bytes], overwrite: dict[str, bytes],
           digest: str) -> dict:
    """Merge one result into the course; return the status recorded."""
    from nbgrader.api import MissingEntry

    name, student = result.assignment, result.student
    if result.failed and not result.grades:  # nothing graded (a worker failed): retried next run
        fields = {"state": "error", "digest": digest, "reasons": result.reasons, "seconds": round(result.seconds, 1)}
        try:
            sub = gb.find_submission(name, student)
            fields.update(score=sub.score, max_score=sub.max_score)
        except MissingEntry:
            fields.update(score=0.0, max_score=gb.find_assignment(name).max_score)
        write_status(course, name, student, **fields)
        return fields
    graded = {**{rel: data for rel, data in files.items() if not rel.endswith(".ipynb")}, **overwrite,
              **{f"{nb}.ipynb": text.encode() for nb, text in result.notebooks.items()}}
    replace_folder(course / "autograded" / student / name, graded)
    gb.update_or_create_student(student)
    # nbgrader builds a new submission before adding it to the session; an autoflush in between (when
    # the assignment's notebooks are not loaded yet, as after a Dask result) warns that it cannot add it.
    with gb.db.no_autoflush:
        submission = gb.update_or_create_submission(name, student, **(
            {"timestamp": result.timestamp} if result.timestamp else {}))
    for nb in submission.notebooks:
        scored = result.grades.get(nb.notebook.name, {})
        for grade in nb.grades:
            g = scored.get(grade.name, {"auto_score": 0.0, "needs_manual_grade": False})
            grade.auto_score = g["auto_score"]
            grade.needs_manual_grade = bool(g["needs_manual_grade"]) or grade.manual_score is not None
        for comment in nb.comments:
            comment.auto_comment = result.comments.get(nb.notebook.name, {}).get(comment.name)
    gb.db.commit()
    try:
        sub = gb.find_submission(name, student)
        score, max_score = sub.score, sub.max_score
    except MissingEntry:
        score, max_score = 0.0, 0.0
    fields = {"state": "graded", "digest": digest, "score": score, "max_score": max_score,
              "reasons": result.reasons, "seconds": round(result.seconds, 1)}
    write_status(course, name, student, **fields)
    return fields
