"""The instructor's command line: `python -m autograder <command>`, thin over nbgrader's own apps.

Each command runs nbgrader (`python -m nbgrader ...`) in the course folder, whose
`nbgrader_config.py` loads `autograder/nbgrader_config.py`. Only validation (nbgrader's
`Validator`, whose app always exits 0) and reading the gradebook run in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .submissions import TIMESTAMP, files, find_submissions, links, notebook_problem, same  # noqa: F401 (used by tests)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIG = HERE / "nbgrader_config.py"
SOURCE = REPO / "solutions"
STUB = '''\
# Written by `python -m autograder`: nbgrader (and formgrader) started in this folder use the
# course configuration kept in the repository.
load_subconfig({config!r})
c.CourseDirectory.root = {root!r}
'''


class Failure(Exception):
    """A problem the instructor can fix: reported as one line, exit status 1."""


class Stopped(KeyboardInterrupt):
    """`kill` (SIGTERM) or a closed terminal (SIGHUP): handled as Ctrl-C is, its clean-up included."""


# The signal that stopped the command, once one has: its handler raises at once, but Python drops an
# exception raised inside a finalizer or a weakref callback, and the loops waiting on grading raise it
# again at their next look (`raise_if_stopped`), so that no stop is ever lost.
STOPPED: list[int] = []
# Set while a result is recorded (`stops_deferred`): a stop then waits until it is whole. Raised inside
# SQLAlchemy (a connection's reset), it was logged there with its traceback, once in a CI run.
DEFERRED: list[bool] = []


def stop(signum: int, frame: object) -> None:
    """Ctrl-C (SIGINT), `kill` (SIGTERM), a closed terminal (SIGHUP): stop the command now, or once the
    result being recorded is."""
    STOPPED.append(signum)
    if not DEFERRED:
        raise_if_stopped()


@contextlib.contextmanager
def stops_deferred():
    """A block that a stop does not interrupt: it is raised when the block has ended."""
    DEFERRED.append(True)
    try:
        yield
    finally:
        DEFERRED.pop()
    raise_if_stopped()


def raise_if_stopped() -> None:
    """Raise KeyboardInterrupt (Ctrl-C) or Stopped (another signal) when a signal has stopped the command."""
    if STOPPED:
        raise KeyboardInterrupt() if STOPPED[0] == signal.SIGINT else Stopped(signal.Signals(STOPPED[0]).name)


class PlainText:
    """A text stream that writes control characters as "?": a student's file name or message printed to the
    instructor's terminal carries no escape sequence (\\t, \\n and \\r, which the progress bar uses, pass)."""

    CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(self.CONTROL.sub("?", text))

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the exit status."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PlainText(sys.stdout), PlainText(sys.stderr)
    try:
        return run_command(argv)
    finally:
        sys.stdout, sys.stderr = streams


def run_command(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; return the exit status."""
    args = parser().parse_args(argv)
    STOPPED.clear()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (nohup, &)
        signal.signal(signal.SIGINT, stop)
    # nbgrader runs `alembic` (its database migrations) from PATH: make the venv's bin/ visible
    # even when the venv is not activated.
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    try:
        if hasattr(args, "all") and bool(args.all) == bool(args.assignments):
            raise Failure("name the assignment(s) or give --all (not both)")
        return args.func(args) or 0
    except Failure as exc:
        print(f"autograder: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from sqlalchemy.exc import DatabaseError

        if not isinstance(exc, DatabaseError):
            raise
        db = Path(os.environ.get("DCV_COURSE_DIR", ".")) / "gradebook.db"
        why = str(exc.orig or exc).splitlines()[0]
        advice = ("another program is writing to it (formgrader, another command): run this one again when "
                  "it is done" if "locked" in why else
                  "it is damaged: restore it from a copy (nbgrader keeps none), or move it away and release "
                  "the assignments again to start an empty one" if "not a database" in why or "malformed" in why
                  else "check the file and the disk it is on")
        print(f"autograder: error: the gradebook {db} cannot be used ({why}): {advice}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        by = f" by {exc}" if isinstance(exc, Stopped) else ""
        print(f"autograder: interrupted{by}" + "".join(f"; {n}" for n in getattr(exc, "__notes__", [])),
              file=sys.stderr)
        return 128 + getattr(signal, str(exc), signal.SIGINT) if by else 130


# ---------------------------------------------------------------------------------------------
# course folder, assignments, nbgrader


def course_dir(args: argparse.Namespace) -> Path:
    """The course folder: --course-dir, else $DCV_COURSE_DIR, else <repo>/_course; ready for nbgrader."""
    course = Path(getattr(args, "course_dir", None) or os.environ.get("DCV_COURSE_DIR") or REPO / "_course").resolve()
    if course.exists() and not course.is_dir():
        raise Failure(f"course folder {course} is not a folder")
    course.mkdir(parents=True, exist_ok=True)
    os.environ["DCV_COURSE_DIR"] = str(course)  # the configuration reads the course's own settings
    stub = STUB.format(config=str(CONFIG), root=str(course))
    config = course / "nbgrader_config.py"
    if not config.exists() or config.read_text() != stub:
        config.write_text(stub)
    return course


def load_config():
    """The course's nbgrader configuration (a traitlets Config)."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader(CONFIG.name, path=str(HERE)).load_config()


def assignments() -> list[str]:
    """The assignments: folders of solutions/ that hold a notebook."""
    return sorted(d.name for d in SOURCE.iterdir() if d.is_dir() and any(d.glob("*.ipynb")))


def known(name: str) -> str:
    """The assignment name, or a Failure naming the known ones."""
    names = assignments()
    if name not in names:
        raise Failure(f"unknown assignment '{name}' (known: {', '.join(names) or 'none'})")
    return name


def notebooks(folder: Path) -> list[Path]:
    """The notebooks of an assignment folder."""
    return sorted(folder.glob("*.ipynb"))


def warm_imports(name: str) -> tuple[str, ...]:
    """What the zygote imports before it forks the kernels of `name`, read from its source notebooks (one
    that cannot be read adds nothing: its kernels import what they need as they run)."""
    from .sandbox import warm_modules

    cells = []
    for path in notebooks(SOURCE / name):
        try:
            cells += json.loads(path.read_text())["cells"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return warm_modules(cells)


def nbgrader(course: Path, *argv: str) -> int:
    """Run `nbgrader <argv>` in the course folder; return its exit status."""
    env = {**os.environ, "DCV_COURSE_DIR": str(course)}
    cmd = [sys.executable, "-m", "nbgrader", *argv]
    print("$ nbgrader " + " ".join(argv), flush=True)
    return subprocess.run(cmd, cwd=course, env=env).returncode


def gradebook(course: Path):
    """The course's gradebook (nbgrader.api.Gradebook); a Failure if none was made yet."""
    db = course / "gradebook.db"
    if not db.exists():
        raise Failure(f"no gradebook in {course}: release an assignment first")
    from nbgrader.api import Gradebook  # slow to import: only when needed

    return Gradebook(f"sqlite:///{db}", course_id=load_config().CourseDirectory.course_id)


def new_gradebook(db: Path) -> None:
    """Start an empty gradebook stamped with nbgrader's database revision, found in this process: nbgrader,
    making it, would start `alembic heads` (about 2 CPU-s) to learn it. Left to nbgrader if it cannot be."""
    import sqlite3

    try:
        import nbgrader
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        scripts = Config()
        scripts.set_main_option("script_location", str(Path(nbgrader.__file__).parent / "alembic"))
        head = ScriptDirectory.from_config(scripts).get_current_head()  # one head, or an error
    except Exception:
        return
    from .grading import stamp

    made = db.with_name(f".{db.name}.new")
    try:
        made.unlink(missing_ok=True)
        stamp(made, head)
        made.rename(db)
    except (OSError, sqlite3.Error):  # (a full disk, a folder it cannot write): nbgrader makes it, or says why
        made.unlink(missing_ok=True)


def require_released(course: Path, name: str) -> None:
    """A Failure unless the assignment is in the gradebook (nbgrader generate_assignment ran)."""
    message = f"'{name}' is not released in {course}: run `python -m autograder release {name}`"
    if not (course / "gradebook.db").exists():
        raise Failure(message)
    from nbgrader.api import MissingEntry

    try:
        with gradebook(course) as gb:
            gb.find_assignment(name)
    except MissingEntry:
        raise Failure(message) from None


# ---------------------------------------------------------------------------------------------
# validation


def validate(notebook: Path, released: bool) -> str | None:
    """What is wrong with a notebook: a source must pass every test, a released one must pass none."""
    from nbgrader.validator import Validator

    results = Validator(config=load_config(), invert=released).validate(str(notebook))

    def cells(key: str, what: str) -> str:  # the first line of a test cell says what it checks
        found = results[key]
        return f"{len(found)} {what}: " + ", ".join(repr(c["source"].splitlines()[0]) for c in found)

    if results.get("type_changed"):
        return f"{len(results['type_changed'])} cell(s) changed type"
    if results.get("changed"):
        return cells("changed", "locked or test cell(s) changed")
    if results.get("passed"):
        return cells("passed", "test cell(s) pass without any work")
    if results.get("failed"):
        return cells("failed", "test cell(s) fail")
    return None


def handed_in(name: str) -> list[str]:
    """The files students hand in beside the notebook (e.g. a trained model): declared once, as
    `c.Autograde.exclude_overwriting` in nbgrader_config.py. The solution's own run saves them in
    solutions/<name>/; they are never released, nor copied over a student's."""
    return list(load_config().Autograde.get("exclude_overwriting", {}).get(name, []))


def missing_artefacts(name: str) -> list[str]:
    """Files an assignment's students hand in that its source folder lacks."""
    return [f for f in handed_in(name) if not (SOURCE / name / f).is_file()]


def check(course: Path, name: str, released: bool) -> None:
    """Validate an assignment's source (or released) notebooks; a Failure on any problem."""
    folder = course / "release" / name if released else SOURCE / name
    if released and not folder.is_dir():
        raise Failure(f"'{name}' is not released in {course}: run `python -m autograder release {name}`")
    if not released and (missing := missing_artefacts(name)):
        notebook = " ".join(str(nb.relative_to(REPO)) for nb in notebooks(folder))
        raise Failure(f"source {name}: {', '.join(missing)} missing: its tests grade the file that the "
                      f"solution saves when it runs; run it once (`jupyter execute {notebook}`, a few "
                      "minutes), then run this command again")
    for notebook in notebooks(folder):
        where = f"{'released' if released else 'source'} {notebook.name}"
        problem = validate(notebook, released)
        if problem:
            raise Failure(f"{where}: {problem}")
        print(f"ok: {where} " + ("passes no test untouched" if released else "passes every test"))


def each(args: argparse.Namespace, step) -> None:
    """Run step(name) for each named assignment (or --all), going on after a failure."""
    names = assignments() if args.all else [known(n) for n in args.assignments]
    if len(names) == 1:
        return step(names[0])
    failed = []
    for name in names:
        try:
            step(name)
        except Failure as exc:
            print(f"autograder: error: {exc}", file=sys.stderr)
            failed.append(name)
    if failed:
        raise Failure(f"{len(failed)} of {len(names)} assignment(s) failed: {', '.join(failed)}")


def cmd_validate(args: argparse.Namespace) -> None:
    course = course_dir(args)
    each(args, lambda name: check(course, name, args.released))


# ---------------------------------------------------------------------------------------------
# release


def cmd_release(args: argparse.Namespace) -> None:
    course = course_dir(args)
    names = assignments() if args.all else [known(n) for n in args.assignments]
    todo, failed = [], []
    released = all((course / "release" / n).exists() for n in names)
    if (course / "gradebook.db").exists() and (args.force or not released):
        with gradebook(course):  # a damaged one is named now, not after the checks, by nbgrader's traceback
            pass

    def fail(name: str, message: str) -> None:  # one assignment: its error; several: go on, count it
        if len(names) == 1:
            raise Failure(message)
        print(f"autograder: error: {message}", file=sys.stderr)
        failed.append(name)

    for name in names:
        if (course / "release" / name).exists() and not args.force:
            print(f"kept: {course / 'release' / name} exists (--force regenerates it)")
            continue
        try:
            if not args.no_check:
                check(course, name, released=False)
            todo.append(name)
        except Failure as exc:
            fail(name, str(exc))
    force = ["--force"] if args.force else []
    if todo and not (course / "gradebook.db").exists():
        new_gradebook(course / "gradebook.db")
    if len(todo) > 1 and todo == assignments():  # one nbgrader process for all: its assignment id is a glob
        runs = [(todo, nbgrader(course, "generate_assignment", "--CourseDirectory.assignment_id=*", *force))]
    else:
        runs = [([name], nbgrader(course, "generate_assignment", name, *force)) for name in todo]
    for released, status in runs:
        for name in released:
            if status or not (course / "release" / name).is_dir():
                fail(name, f"nbgrader generate_assignment {name} failed (exit {status}): see its log above")
                continue
            # What the solution's own run left next to the source (a trained reference model) is the
            # instructor's: students hand in their own. nbgrader's ignore list cannot drop it, since it
            # also applies when submitted files are copied for autograding.
            for rel in handed_in(name):
                artefact = course / "release" / name / rel
                if artefact.is_file():
                    artefact.unlink()
                    print(f"kept out of the release: {rel}")
            print(f"released: {course / 'release' / name}")
    if failed:
        raise Failure(f"{len(failed)} of {len(names)} assignment(s) failed: {', '.join(sorted(failed))}")


# ---------------------------------------------------------------------------------------------
# autograde


def assignment_files(name: str) -> tuple[list[str], dict[str, bytes]]:
    """The assignment's notebook names, and the other files of its source folder that grading copies
    over a submission (nbgrader's rule: all but ignored files and those students hand in)."""
    from nbgrader.utils import find_all_files

    config = load_config()
    folder = SOURCE / name
    theirs = set(handed_in(name))
    ignore = list(config.CourseDirectory.get("ignore", [])) + ["*.ipynb"]
    overwrite = {}
    for path in find_all_files(str(folder), ignore):
        rel = os.path.relpath(path, folder)
        if rel not in theirs:
            overwrite[rel] = Path(path).read_bytes()
    return [nb.name for nb in notebooks(folder)], overwrite


def copy_in(course: Path, name: str, found: dict, problems: list[str], force: bool) -> None:
    """Copy (never move) each readable submission into submitted/<student>/<name>/."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for student, content in found.items():
        dest = course / "submitted" / student / name
        if not content:  # unreadable: list the student (score 0), keep any earlier submission
            with gradebook(course) as gb:
                gb.update_or_create_student(student)
            if dest.exists():
                problems.append(f"{student}: kept the earlier submission in {dest}")
            continue
        if dest.exists():
            if same(files(dest), content):
                continue  # the same submission: its grade is kept
            if not force:
                problems.append(f"{student}: differs from the submission collected before: kept the "
                                f"earlier one (--force replaces it, moving it to superseded/)")
                continue
            backup = course / "superseded" / stamp / student / name
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(dest), str(backup))
            print(f"superseded: {dest} -> {backup}")
        tmp = dest.with_name(dest.name + ".copying")
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, path in content.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, tmp / rel)
        tmp.rename(dest)


def collect_into(course: Path, name: str, source: Path, pattern: str | None, force: bool
                 ) -> tuple[dict[str, dict], list[str], dict[str, list[str]]]:
    """Copy the submissions found in a folder or zip into submitted/; what was found, problems, notes."""
    import tempfile

    from . import collect, record

    expected, _ = assignment_files(name)
    with tempfile.TemporaryDirectory(prefix="dcv-collect-") as tmp:
        folder, problems = source, []
        if source.is_file():
            if source.suffix.lower() != ".zip":
                raise Failure(f"{source} is neither a folder nor a .zip file")
            try:
                problems += collect.unzip(source, Path(tmp) / "unzipped")
            except ValueError as exc:
                raise Failure(str(exc)) from None
            folder = Path(tmp) / "unzipped"
            folder.mkdir(exist_ok=True)
        elif not source.is_dir():
            raise Failure(f"submissions folder {source} does not exist or is not a folder")
        if pattern:
            extensions = sorted({".ipynb", *(Path(f).suffix for f in handed_in(name))})
            sorted_folder = Path(tmp) / "sorted"
            sorted_folder.mkdir()
            problems += [f"{link}: a symbolic link: not followed, not collected" for link in links(folder)]
            problems += collect.by_pattern([p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()],
                                           pattern, sorted_folder, name, extensions)[0]
            folder = sorted_folder
        found, more, notes = find_submissions(folder, name, expected, handed_in(name))
        problems += more
        if not any(found.values()):
            problems_note = f" ({len(problems)} skipped, see above)" if problems else ""
            for p in problems:
                print(f"autograder: {p}", file=sys.stderr)
            raise Failure(f"no gradable submission of {name} in {source}{problems_note}: expected "
                          f"<student_id>/{name}.ipynb or <student_id>/{name}/<notebook>.ipynb")
        require_released(course, name)
        copy_in(course, name, found, problems, force)
    with gradebook(course) as gb:
        due = gb.find_assignment(name).duedate
    for student, content in found.items():
        if not content:
            why = next((p for p in problems if p.startswith(f"{student}: ")), f"{student}: unreadable")
            record.write_status(course, name, student, state="not graded", score=0.0, max_score=None,
                                reasons=[why.split(": ", 1)[1]])
            continue
        stamp = course / "submitted" / student / name / TIMESTAMP
        if stamp.is_file() and (how := collect.late(stamp.read_text().strip(), due)):
            notes.setdefault(student, []).append(how)
        saved = course / "collect" / name / f"{student}.json"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(notes.get(student, [])))
    return found, problems, notes


def cmd_collect(args: argparse.Namespace) -> int:
    course = course_dir(args)
    name = known(args.assignment)
    found, problems, notes = collect_into(course, name, Path(args.source), args.pattern, args.force)
    for student in sorted(found):
        what = "; ".join(notes.get(student, [])) if found[student] else "unreadable: not collected"
        print(f"{student:<24} {what}")
    for p in problems:
        print(f"autograder: {p}", file=sys.stderr)
    print(f"collected: {sum(bool(c) for c in found.values())} submission(s) of {name} in "
          f"{course / 'submitted'}; {len(problems)} problem(s) reported")
    unreadable = [s for s, c in found.items() if not c]
    if unreadable:
        raise Failure(f"{len(unreadable)} submission(s) could not be read: {', '.join(unreadable)} (scored 0)")
    return 0


# A kernel's sockets are files in its submission's folder, <this command's>/dcv-grade-12345678/run<notebook>/
# kernel-ipc-N, and a socket's path holds at most 107 bytes: the temporary folder must be short ("runtime":
# room for run0 to run999).
SOCKET_PATH_MAX, UNDER_TEMP = 107, len("/dcv-autograde-12345678/dcv-grade-12345678/runtime/kernel-ipc-99")


def private_temp() -> str:
    """Make this command's temporary folders (its zygote's, each submission's) in one of its own, removed
    when it exits: a worker stopped while grading (Ctrl-C) leaves nothing in the system's. The folders of
    earlier commands that could not remove theirs (`kill -9`) go too: they hold students' notebooks.
    Return the temporary folder it replaces (for the caller to restore)."""
    import atexit
    import tempfile

    base = tempfile.gettempdir()
    if len(base) + UNDER_TEMP > SOCKET_PATH_MAX:
        if not os.access("/tmp", os.W_OK | os.X_OK):
            raise Failure(f"the temporary folder {base} is too long a path for the kernels' sockets "
                          f"({SOCKET_PATH_MAX - UNDER_TEMP} characters at most): set TMPDIR to a shorter one")
        print(f"autograder: {base} is too long a path for the kernels' sockets: using /tmp", file=sys.stderr)
        base = "/tmp"
    for old in Path(base).glob("dcv-autograde-*"):
        try:
            if old.stat().st_uid == os.getuid():
                os.kill(int((old / "pid").read_text()), 0)  # raises if that command is gone
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (OSError, ValueError):  # another user's, or not written yet: left alone
            pass
    folder = tempfile.mkdtemp(prefix="dcv-autograde-", dir=base)
    os.chmod(folder, 0o755)  # each kernel's user goes through it to its submission's folder
    Path(folder, "pid").write_text(str(os.getpid()))
    previous, tempfile.tempdir = tempfile.tempdir, folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # after the zygote stops (registered later)
    return previous


def cmd_autograde(args: argparse.Namespace) -> int:
    import tempfile

    previous = private_temp()
    try:
        return autograde(args)
    finally:  # as it was for what follows in this process (tests call main() in theirs)
        tempfile.tempdir = previous


def autograde(args: argparse.Namespace) -> int:
    """`autograde`, in this command's temporary folder."""
    course = course_dir(args)
    name = known(args.assignment)
    warm = warm_imports(name)
    if not args.scheduler:  # started first, it imports TensorFlow while this process imports nbgrader
        from .sandbox import zygote

        zygote(warm)
    from . import grading, record

    expected, overwrite = assignment_files(name)
    if args.submissions:
        found, problems, notes = collect_into(course, name, Path(args.submissions), args.pattern, args.force)
    else:  # grade what `collect` put into submitted/
        require_released(course, name)
        folders = sorted(p for p in (course / "submitted").glob(f"*/{name}") if p.is_dir())
        linked = {p: [str(q) for q in (p.parent, p) if q.is_symlink()] or links(p) for p in folders}
        found = {p.parent.name: files(p) for p in folders if not linked[p]}
        problems = [f"{p.parent.name}: {', '.join(linked[p])}: symbolic link(s) in submitted/, not followed: "
                    "skipped" for p in folders if linked[p]]
        if not found:
            for p in problems:
                print(f"autograder: {p}", file=sys.stderr)
            raise Failure(f"nothing collected for {name} in {course / 'submitted'}: run `collect` first, "
                          "or name the submissions folder")
        notes = {}
        for student in found:
            saved = course / "collect" / name / f"{student}.json"
            notes[student] = json.loads(saved.read_text()) if saved.is_file() else []

    config = load_config()
    if args.unsafe_no_sandbox:
        config.Sandbox.enabled = False
    jobs = []
    with gradebook(course) as gb:
        definition = record.definition(gb, name)
    for student, content in found.items():
        if not content:
            continue
        # Read for the digest now and again when graded: a class's submissions are never all in memory.
        folder = course / "submitted" / student / name
        paths = files(folder)
        digest = grading.digest({rel: path.read_bytes() for rel, path in paths.items()})
        before = record.read_status(course, name, student)
        if before and before.get("digest") == digest and before.get("state") == "graded" and not args.force:
            print(f"already graded: {student} (same submission; --force grades it again)")
            continue
        stamp = paths[TIMESTAMP].read_bytes().decode(errors="replace").strip() if TIMESTAMP in paths else ""
        jobs.append((grading.Job(name, student, definition, str(folder), overwrite, config, warm, stamp or None,
                                 notes.get(student, [])), digest))
    if jobs and config.Sandbox.enabled:
        if why := grading.sandbox_problem():  # checked once: forked workers inherit the answer
            raise Failure(f"cannot sandbox the students' kernels: {why}. Refusing to run student code "
                          "unconfined; `--unsafe-no-sandbox` does (only for code you trust)")
    elif jobs:
        print("autograder: WARNING: --unsafe-no-sandbox: student code runs as you, unconfined", file=sys.stderr)
    digests = {job.student: digest for job, digest in jobs}
    count = iter(range(1, len(jobs) + 1))
    not_graded, merged = [], []

    # The course's gradebook, opened at the first result (local workers have forked by then) and kept
    # open: one engine, whose statements SQLAlchemy compiles once, not once per result.
    opened = []

    def merge(job, result) -> None:  # the one writer: each result recorded as soon as it arrives, whole
        with stops_deferred():
            if not opened:
                opened.append(gradebook(course))
            done = record.record(course, opened[0], result, job.contents(), job.overwrite, digests[job.student])
            merged.append(job.student)
        from tqdm import tqdm

        if done["state"] == "graded":
            outcome = f"{done['score']:g} of {done['max_score']:g}"
        else:  # the grader failed, not the student: the grade it had (if any) is kept
            outcome = "NOT GRADED"
            not_graded.append(job.student)
        tqdm.write(f"[{next(count)}/{len(jobs)}] {job.student}: {outcome} "
                   f"({result.seconds:.1f} s){' - ' + '; '.join(result.reasons) if result.reasons else ''}",
                   file=sys.stdout)
        sys.stdout.flush()

    from . import executors

    try:
        executors.run([job for job, _ in jobs], merge, workers=args.workers, scheduler=args.scheduler)
    except KeyboardInterrupt as exc:
        exc.add_note(f"{len(merged)} of {len(jobs)} submission(s) graded and recorded; the same command "
                     f"grades the other {len(jobs) - len(merged)}")
        raise
    finally:
        for gb in opened:
            gb.close()
    summary(course, name, sorted(found))
    for p in problems:
        print(f"autograder: {p}", file=sys.stderr)
    unreadable = [s for s, c in found.items() if not c]
    said = []
    if unreadable:
        said.append(f"{len(unreadable)} submission(s) could not be read: {', '.join(unreadable)} (scored 0)")
    if not_graded:
        said.append(f"{len(not_graded)} submission(s) could not be graded, through no fault of theirs: "
                    f"{', '.join(sorted(not_graded))} (why: in the notes above). Run the same command again "
                    "to grade them; the others are not graded again")
    if said:
        raise Failure("; ".join(said))
    return 0


def summary(course: Path, name: str, students: list[str]) -> None:
    """Print each student's score, and what grading said about it (why points are missing)."""
    from nbgrader.api import MissingEntry

    from . import record

    with gradebook(course) as gb:
        max_score = gb.find_assignment(name).max_score
        print(f"\n{'student':<24} {'score':>7} {'max':>7}  notes")
        for student in students:
            status = record.read_status(course, name, student) or {}
            try:
                sub = gb.find_submission(name, student)
                score, needs_manual = sub.score, sub.needs_manual_grade
            except MissingEntry:
                score, needs_manual = 0.0, False
            notes = list(status.get("reasons", []))
            if status.get("state") not in ("graded", None):
                notes.insert(0, status["state"])
            elif not status:
                notes.insert(0, "not graded")
            if needs_manual:
                notes.append("needs manual grading")
            print(f"{student:<24} {score:>7.1f} {max_score:>7.1f}  {'; '.join(notes)}")


# ---------------------------------------------------------------------------------------------
# feedback, export, status


def cmd_feedback(args: argparse.Namespace) -> None:
    course = course_dir(args)
    name = known(args.assignment)
    require_released(course, name)
    if not list((course / "autograded").glob(f"*/{name}")):
        raise Failure(f"nothing autograded for {name} in {course}: run autograde first")
    status = nbgrader(course, "generate_feedback", name, *(["--force"] if args.force else []),
                      *([f"--student={args.student}"] if args.student else []))
    if status:
        raise Failure(f"nbgrader generate_feedback {name} failed (exit {status}): see its log above")
    html = sorted((course / "feedback").glob(f"*/{name}/*.html"))
    print(f"feedback: {len(html)} HTML file(s) in {course / 'feedback'}/<student>/{name}/")


def cmd_export(args: argparse.Namespace) -> None:
    course = course_dir(args)
    gradebook(course).close()  # a Failure if there is none
    dest = Path(args.to).resolve() if args.to else course / "grades.csv"
    dest.parent.mkdir(parents=True, exist_ok=True)
    status = nbgrader(course, "export", f"--to={dest}")
    if status or not dest.exists():
        raise Failure(f"nbgrader export failed (exit {status}): see its log above")
    print(f"grades: {dest}")


def cmd_status(args: argparse.Namespace) -> None:
    course = course_dir(args)
    count = lambda step, name: len(list((course / step).glob(f"*/{name}")))
    manual = {}
    if (course / "gradebook.db").exists():
        with gradebook(course) as gb:
            for a in gb.assignments:
                manual[a.name] = sum(s.needs_manual_grade for s in a.submissions)
    print(f"course folder: {course}")
    print(f"{'assignment':<28} {'released':>8} {'submitted':>9} {'autograded':>10} "
          f"{'to grade':>8} {'feedback':>8}")
    for name in assignments():
        released = "yes" if (course / "release" / name).is_dir() else "no"
        print(f"{name:<28} {released:>8} {count('submitted', name):>9} {count('autograded', name):>10} "
              f"{manual.get(name, 0):>8} {count('feedback', name):>8}")
    for name in [known(n) for n in args.assignments]:
        require_released(course, name)
        students = sorted({p.stem for p in (course / "grading" / name).glob("*.json")}
                          | {p.parent.name for p in (course / "submitted").glob(f"*/{name}")})
        print(f"\n{name}:", end="")
        summary(course, name, students)


# ---------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per step of the workflow."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--course-dir", default=argparse.SUPPRESS, metavar="DIR",
                        help="course folder (default: $DCV_COURSE_DIR, else <repo>/_course)")
    main = argparse.ArgumentParser(
        prog="python -m autograder", parents=[common],
        description="Grade the course's nbgrader assignments: release -> autograde -> feedback -> export.",
        epilog="Manual grading: `cd <course folder> && jupyter lab`, then Nbgrader > Formgrader.")
    sub = main.add_subparsers(dest="command", required=True, metavar="command")

    def command(name, func, help):
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    def some_or_all(p):
        p.add_argument("assignments", nargs="*", metavar="assignment", help="assignment name(s)")
        p.add_argument("--all", action="store_true", help="every assignment in solutions/")

    p = command("release", cmd_release,
                "Validate the source notebook(s), then nbgrader generate_assignment into release/.")
    some_or_all(p)
    p.add_argument("--force", action="store_true", help="regenerate an existing release")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the source's tests first (the book's staging uses this)")
    p = command("validate", cmd_validate,
                "Check that the source passes every test, or (--released) that the released notebook passes none.")
    some_or_all(p)
    p.add_argument("--released", action="store_true", help="check the released notebook(s) instead")
    p = command("autograde", cmd_autograde,
                "Copy a folder of submissions into submitted/, then grade each one in the sandbox "
                "(nbgrader's preprocessors) into the gradebook.")
    p.add_argument("assignment")
    p.add_argument("submissions", nargs="?",
                   help="folder (or .zip) of <student_id>/<assignment>.ipynb or <student_id>/<assignment>/*.ipynb, "
                        "collected first; without it, what `collect` put into submitted/ is graded")
    p.add_argument("--pattern", metavar="REGEX", help="as for `collect`: an LMS download's file names")
    p.add_argument("--force", action="store_true",
                   help="replace changed submissions (the old copy goes to superseded/) and regrade "
                        "this folder's students; manual grades are kept")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="grade N submissions at once on this machine (default: its %(default)s cores)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="grade on the Dask distributed cluster whose scheduler is there (see README)")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="run the students' kernels outside the sandbox, as you, unconfined (only where "
                        "the sandbox cannot be built, and only for code you trust)")
    p = command("collect", cmd_collect,
                "Copy submissions from a folder or an LMS download (.zip) into submitted/, reporting wrong "
                "names, duplicates, unreadable notebooks and late submissions.")
    p.add_argument("assignment")
    p.add_argument("source", help="folder or .zip: <student_id>/<assignment>.ipynb, <student_id>/<assignment>/*, "
                                  "or files named after the student (--pattern)")
    p.add_argument("--pattern", metavar="REGEX",
                   help="regular expression with the groups student_id and file_id (and optionally timestamp) "
                        "matched against each file name of an LMS download (nbgrader's FileNameCollectorPlugin), "
                        r"e.g. '(?P<student_id>\w+)_(?P<timestamp>[0-9T:-]+)_(?P<file_id>\w+)'")
    p.add_argument("--force", action="store_true",
                   help="replace changed submissions (the old copy goes to superseded/)")
    p = command("feedback", cmd_feedback, "nbgrader generate_feedback: one HTML file per student in feedback/: "
                "each test's name, result, points and error message, never the hidden tests' code.")
    p.add_argument("assignment")
    p.add_argument("--force", action="store_true", help="regenerate existing feedback")
    p.add_argument("--student", metavar="ID", help="only this student's feedback")
    p = command("export", cmd_export, "nbgrader export: a CSV of every student's grade per assignment.")
    p.add_argument("--to", metavar="CSV", help="where to write (default: <course folder>/grades.csv)")
    p = command("status", cmd_status, "Count released, submitted, autograded, to-grade and feedback per "
                "assignment; with assignment names, each student's score and why points are missing.")
    p.add_argument("assignments", nargs="*", metavar="assignment", help="assignment(s) to list per student")

    return main
