"""Find each student's submission in a folder of collected work, and say what is wrong with it."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

COPY_IGNORE = (".ipynb_checkpoints", "__pycache__", "*.pyc", "feedback")
# nbgrader's record of when a submission was handed in, beside its notebooks.
TIMESTAMP = "timestamp.txt"


def notebook_problem_text(data: bytes) -> str | None:
    """Why some bytes are not a readable notebook, or None."""
    import warnings

    import nbformat

    try:
        text = data.decode("utf-8")
        json.loads(text)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"not valid notebook JSON ({exc.msg} at line {exc.lineno})"
    except RecursionError:
        return "not a readable notebook (its JSON is nested too deeply)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. duplicate cell ids, which nbformat renumbers
            nb = nbformat.reads(text, as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no cells")
    except Exception as exc:
        return f"not a Jupyter notebook ({type(exc).__name__})"
    return None


def notebook_problem(path: Path) -> str | None:
    """Why a file is not a readable notebook, or None."""
    return notebook_problem_text(path.read_bytes())


def files(folder: Path) -> dict[str, Path]:
    """Relative path -> path of every file under folder, leaving out COPY_IGNORE and symbolic links."""
    ignore = shutil.ignore_patterns(*COPY_IGNORE)
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        skipped = ignore(dirpath, dirnames + filenames)
        dirnames[:] = sorted(d for d in dirnames if d not in skipped)
        for f in filenames:
            path = os.path.join(dirpath, f)
            if f not in skipped and os.path.isfile(path) and not os.path.islink(path):
                out[os.path.relpath(path, folder)] = Path(path)
    return out


def links(folder: Path) -> list[str]:
    """The symbolic links under folder (relative paths), which collecting never follows: a student's
    link could name any file the instructor can read (a solution, another student's work, the gradebook)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk does not enter linked folders
        found += [os.path.relpath(os.path.join(dirpath, f), folder) for f in dirnames + filenames
                  if os.path.islink(os.path.join(dirpath, f))]
    return sorted(found)


def regular(path: Path) -> bool:
    """Whether path is a file reached through no symbolic link below its student's folder."""
    return path.is_file() and not path.is_symlink() and not path.parent.is_symlink()


def same(a: dict[str, Path], b: dict[str, Path]) -> bool:
    """Whether two file sets have the same names and contents."""
    return a.keys() == b.keys() and all(a[k].read_bytes() == b[k].read_bytes() for k in a)


def other_exercise(file_name: str, name: str) -> bool:
    """Whether a notebook's name says it is another exercise than `name` (`ex03.ipynb` for ex02_...)."""
    number = lambda text: re.match(r"(?i)ex(?:ercise)?[ _-]*0*(\d+)", text)
    theirs, ours = number(file_name), number(name)
    return bool(theirs and ours and theirs.group(1) != ours.group(1))


def find_submissions(folder: Path, name: str, expected: list[str], handed_in: list[str] = ()
                     ) -> tuple[dict[str, dict[str, Path]], list[str], dict[str, list[str]]]:
    """Each student's files (relative path in submitted/<student>/<name>/ -> file), problems, notes.

    `expected` are the assignment's notebook file names, `handed_in` the other files its students hand in
    (a trained model), taken from beside a notebook handed in alone too, as is nbgrader's timestamp.txt;
    a note names any handed-in file missing. A
    student whose notebook cannot be read maps to {}: reported, not copied, scored 0. A single
    notebook under another name is taken as the assignment's (when it has one notebook), and a note
    says so.
    """
    found, problems, notes = {}, [], {}
    for path in sorted(p for p in folder.iterdir() if p.is_symlink() and p.name[0] not in "._"):
        problems.append(f"{path.name}: a symbolic link: not followed, skipped")
    for student_dir in sorted(p for p in folder.iterdir()
                              if p.is_dir() and not p.is_symlink() and p.name[0] not in "._"):
        student = student_dir.name
        if linked := links(student_dir):
            problems.append(f"{student}: {', '.join(linked)}: symbolic link(s), not followed: left out")
            notes.setdefault(student, []).append(f"left out, symbolic link(s): {', '.join(linked)}")
        nested, flat = student_dir / name, student_dir / f"{name}.ipynb"
        loose = sorted(p for p in student_dir.glob("*.ipynb") if regular(p))
        beside = {rel: student_dir / rel for rel in [*handed_in, TIMESTAMP] if regular(student_dir / rel)}
        if nested.is_dir() and not nested.is_symlink() and any(regular(p) for p in nested.glob("*.ipynb")):
            content = files(nested)
        elif regular(flat) and len(expected) == 1:
            content = {expected[0]: flat, **beside}
        elif len(loose) == 1 and len(expected) == 1 and not other_exercise(loose[0].name, name):
            content = {expected[0]: loose[0], **beside}
        else:
            seen = ", ".join(p.name for p in loose)
            problems.append(f"{student}: no {name}.ipynb or {name}/*.ipynb"
                            f"{f' (found {seen})' if seen else ''}: skipped")
            continue
        if not re.fullmatch(r"[\w.@+-]+", student):
            problems.append(f"{student!r}: not a usable student id (letters, digits, . @ + - _): skipped")
            continue
        handed = [rel for rel in content if rel.endswith(".ipynb")]
        if len(expected) == 1 and expected[0] not in content and len(handed) == 1:
            content[expected[0]] = content.pop(handed[0])
        for rel, path in content.items():
            if rel in expected and path.name != rel:
                notes.setdefault(student, []).append(f"notebook handed in as '{path.name}': graded as {rel}")
        for rel in handed_in:
            if rel not in content:
                notes.setdefault(student, []).append(f"{rel} not handed in: the tests that load it score 0")
        bad = [f"{path.name}: {why}" for rel, path in content.items()
               if rel.endswith(".ipynb") and (why := notebook_problem(path))]
        if bad:
            problems.append(f"{student}: {'; '.join(bad)}: skipped, scored 0")
            content = {}
        found[student] = content
    return found, problems, notes
