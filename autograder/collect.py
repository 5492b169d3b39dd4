"""Collect handed-in work into the course folder: from a folder or an LMS download (zip).

A folder (or a zip of one) in the layout `<student_id>/<assignment>.ipynb` or
`<student_id>/<assignment>/<files>` is used as it is. An LMS download whose files are named after
the student (`--pattern`, a regular expression with the groups `student_id` and `file_id`, and
optionally `timestamp`: nbgrader's FileNameCollectorPlugin) is sorted into that layout first.
Duplicates, files that match no student, unreadable notebooks, wrong names and late submissions
are reported, never silently dropped.
"""

from __future__ import annotations

import datetime
import shutil
import zipfile
import zlib
from pathlib import Path

from .submissions import TIMESTAMP

MAX_UNZIPPED = 2 * 1024 ** 3  # bytes a zip may expand to


def unzip(archive: Path, dest: Path) -> list[str]:
    """Extract a zip safely (no path outside dest, bounded size; a ValueError says why not); one problem per
    file that cannot be read out of it (damaged, encrypted, compressed in a way Python cannot read), left out."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{archive.name} is not a readable zip file ({exc})") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if sum(m.file_size for m in members) > MAX_UNZIPPED:
            raise ValueError(f"{archive.name} expands to more than {MAX_UNZIPPED // 1024 ** 3} GB")
        root = dest.resolve()
        targets = [(m, (dest / m.filename).resolve()) for m in members]
        for m, target in targets:
            if root not in target.parents:
                raise ValueError(f"{archive.name} holds a path outside its folder: {m.filename!r}")
        problems = []
        for m, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                target.unlink(missing_ok=True)
                problems.append(f"{m.filename}: cannot be read out of {archive.name} ({exc}): not collected; "
                                "download the archive again")
        return problems


def by_pattern(files: list[Path], pattern: str, folder: Path, name: str, extensions: list[str]
               ) -> tuple[list[str], dict[str, str]]:
    """Sort LMS-named files into folder/<student>/<name>/<file_id>; return problems and timestamps.

    Two files for the same student and file: the one with the later timestamp (else the later
    name) is kept, the other reported.
    """
    import logging

    from nbgrader.plugins import FileNameCollectorPlugin

    quiet = logging.getLogger("autograder.collect")
    quiet.setLevel(logging.ERROR)  # a file that does not match is reported below, once
    plugin = FileNameCollectorPlugin(named_regexp=pattern, valid_ext=extensions, log=quiet)
    problems, chosen = [], {}
    for path in sorted(files):
        info = plugin.collect(path.name) if path.suffix in extensions else None
        if not info:
            problems.append(f"{path.name}: does not match --pattern (or is not a {'/'.join(extensions)} file): "
                            "not collected")
            continue
        file_id = info["file_id"] if Path(info["file_id"]).suffix else info["file_id"] + path.suffix
        key = (info["student_id"], file_id)
        stamp = str(info.get("timestamp") or "")
        if key in chosen:
            old_path, old_stamp = chosen[key]
            keep, drop = ((path, stamp), (old_path, old_stamp)) if stamp >= old_stamp else (
                (old_path, old_stamp), (path, stamp))
            problems.append(f"{key[0]}: {drop[0].name} and {keep[0].name} are both {file_id}: kept "
                            f"{keep[0].name}{' (the later one)' if stamp != old_stamp else ''}")
            chosen[key] = keep
        else:
            chosen[key] = (path, stamp)
    stamps = {}
    for (student, file_id), (path, stamp) in chosen.items():
        dest = folder / student / name / file_id
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
        if stamp:
            stamps[student] = max(stamps.get(student, ""), stamp)
    for student, stamp in stamps.items():
        (folder / student / name / TIMESTAMP).write_text(stamp + "\n")
    return problems, stamps


def late(timestamp: str | None, duedate: datetime.datetime | None) -> str | None:
    """How late a submission is, in words, or None."""
    if not timestamp or not duedate:
        return None
    from nbgrader.utils import parse_utc

    try:
        when = parse_utc(timestamp)
    except Exception:
        return f"unreadable timestamp {timestamp!r}"
    due = duedate if duedate.tzinfo else duedate.replace(tzinfo=when.tzinfo)
    if when <= due:
        return None
    return f"late: submitted {when:%Y-%m-%d %H:%M}, {(when - due).total_seconds() / 3600:.1f} h after the due date"
