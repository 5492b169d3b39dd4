"""Grade one submission: the job that every executor runs, with nothing but data in and data out.

`grade(job)` copies the submission into a private temporary folder, rebuilds the assignment's
definition in a private gradebook there, and runs nbgrader's own autograde preprocessors on each
notebook (restore locked and test cells, execute, score), the kernel inside the sandbox. It returns
a `Result`: the graded notebooks, every grade and comment, and the reasons for anything that could
not be graded in full. It never opens the course's gradebook or folder: `record.py` merges results.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbformat import NotebookNode
from nbgrader import utils
from nbgrader.nbgraderformat import MetadataValidator, ValidationError
from nbgrader.nbgraderformat.common import BaseMetadataValidator
from nbgrader.preprocessors import (
    AssignLatePenalties,
    ClearOutput,
    Execute,
    IgnorePattern,
    LimitOutput,
    OverwriteCells,
    OverwriteKernelspec,
)
from nbgrader.preprocessors import CheckCellMetadata as NbgraderCheckCellMetadata
from nbgrader.preprocessors import DeduplicateIds as NbgraderDeduplicateIds
from nbgrader.preprocessors import SaveAutoGrades as NbgraderSaveAutoGrades
from traitlets.config import Config

from .inert import make_inert
from .sandbox import MB, Sandbox, SandboxedKernelManager, Watchdog
from .submissions import TIMESTAMP

NOT_RUN = "NotRun"  # ename of the error output given to a cell that never ran (it scores 0)


@dataclass
class Job:
    """Everything needed to grade one student's submission of one assignment (picklable)."""

    assignment: str
    student: str
    definition: dict            # the assignment as the gradebook holds it (see record.definition)
    folder: str                 # the submission as collected (course/submitted/<student>/<assignment>)
    overwrite: dict[str, bytes]  # the release's other files, copied over the submission's
    config: Config              # the course's nbgrader configuration (sandbox limits included)
    warm: tuple[str, ...]       # what the kernels' zygote imports first (sandbox.warm_modules of the source)
    timestamp: str | None = None
    notes: list[str] = field(default_factory=list)  # found while collecting (e.g. a renamed notebook)
    files: dict[str, bytes] | None = None  # the folder's files, once shipped to a machine that cannot read it

    def contents(self) -> dict[str, bytes]:
        """The submission: relative path -> content (read from its folder when it was not shipped)."""
        return self.files if self.files is not None else submission_files(Path(self.folder))

    def shipped(self) -> Job:
        """This job with the submission's files inside (for a Dask worker): read now, not before."""
        return dataclasses.replace(self, files=self.contents())


class GradingError(Exception):
    """Grading could not be done, through no fault of the student's (e.g. a kernel that cannot start)."""


def submission_files(folder: Path) -> dict[str, bytes]:
    """The files of a collected submission, but nbgrader's timestamp.txt: relative path -> content."""
    from .submissions import files

    return {rel: path.read_bytes() for rel, path in files(folder).items() if rel != TIMESTAMP}


@dataclass
class Result:
    """What grading one submission gives back: graded notebooks, grades, comments, reasons."""

    assignment: str
    student: str
    notebooks: dict[str, str] = field(default_factory=dict)  # notebook name -> graded .ipynb text
    grades: dict[str, dict[str, dict]] = field(default_factory=dict)  # notebook -> grade id -> fields
    comments: dict[str, dict[str, str | None]] = field(default_factory=dict)  # notebook -> cell -> auto comment
    reasons: list[str] = field(default_factory=list)  # why points may be missing, one line each
    failed: bool = False  # no notebook could be run at all
    timestamp: str | None = None
    seconds: float = 0.0


def digest(files: dict[str, bytes]) -> str:
    """A fingerprint of a submission's files (names and contents)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# nbgrader preprocessors, made robust against hostile notebooks


class DeduplicateIds(NbgraderDeduplicateIds):
    """nbgrader's: the last cell with a grade id keeps it; the others become plain cells.

    nbgrader leaves `"nbgrader": {}` on the others, which its metadata check then refuses as an
    "old version" and stops the whole notebook; here the key is removed.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if not (utils.is_grade(cell) or utils.is_solution(cell) or utils.is_locked(cell)):
            return cell, resources
        grade_id = cell.metadata.nbgrader.get("grade_id")
        if grade_id in self.grade_ids:
            resources.setdefault("dcv_notes", []).append(
                f"cell '{grade_id}' appears more than once: the last copy was graded")
            del cell.metadata["nbgrader"]
        else:
            self.grade_ids.add(grade_id)
        return cell, resources


class RestoreCells(OverwriteCells):
    """nbgrader's OverwriteCells (locked cells, points and types restored), and every locked cell
    the student deleted put back after the cell that precedes it in the source."""

    def preprocess(self, nb, resources):
        self.restored: list[str] = []
        nb, resources = super().preprocess(nb, resources)
        if self.restored:
            resources.setdefault("dcv_notes", []).append(
                "deleted locked cell(s) restored and run: " + ", ".join(self.restored))
        return nb, resources

    def add_missing_grade_cells(self, nb, resources):
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        graded = {c.name: c.max_score for c in source_nb.grade_cells}
        present = lambda: {c.metadata.get("nbgrader", {}).get("grade_id"): i
                           for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id")}
        source_cells = list(source_nb.source_cells)
        for index, source in enumerate(source_cells):
            if not source.locked or source.name in present():
                continue
            where = present()
            anchor = next((where[s.name] for s in reversed(source_cells[:index]) if s.name in where), -1)
            if source.name in graded:
                cell = self.missing_cell_transform(source, graded[source.name])
            else:  # a locked cell that is not graded (setup code, data): as it was, locked
                cell = nbformat.from_dict({
                    "cell_type": source.cell_type, "source": source.source, "metadata": {
                        "deletable": False, "editable": False, "nbgrader": {
                            "grade": False, "solution": False, "locked": True, "grade_id": source.name,
                            "checksum": source.checksum, "schema_version": 3}}})
                if source.cell_type == "code":
                    cell.update(outputs=[], execution_count=None)
            nb.cells.insert(anchor + 1, cell)
            self.restored.append(source.name)
        return nb, resources

    def add_missing_task_cells(self, nb, resources):
        return nb, resources


class SaveAutoGrades(NbgraderSaveAutoGrades):
    """nbgrader's, except that text on stderr (a warning) does not zero a test cell: errors do."""

    def _add_score(self, cell, resources):
        if cell.cell_type == "code":
            cell = copy.copy(cell)
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
        super()._add_score(cell, resources)


class _CompiledSchema(BaseMetadataValidator):
    """The JSON-schema step of nbgrader's metadata check, with a schema compiled once (`compiled`)."""

    def validate_cell(self, cell: NotebookNode) -> None:
        meta = cell.metadata.get("nbgrader")
        if meta is not None and meta.get("schema_version", 0) == self.schema_version:
            self.compiled.validate(meta)
        else:  # nothing to check, or another schema version: nbgrader's own step says which
            super().validate_cell(cell)


class _MetadataValidator(MetadataValidator, _CompiledSchema):
    """nbgrader's validator (grade ids, points, cell types) whose schema is read and compiled once, not
    for every cell (a check of exercise 9: 0.8 ms instead of 7)."""

    def __init__(self) -> None:
        import jsonschema

        super().__init__()
        self.compiled = jsonschema.validators.validator_for(self.schema)(self.schema)


@functools.lru_cache(maxsize=1)
def _validator() -> _MetadataValidator:
    return _MetadataValidator()


class CheckCellMetadata(NbgraderCheckCellMetadata):
    """nbgrader's check that every cell's grading metadata is well formed, with the schema compiled once."""

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        try:
            _validator().validate_nb(nb)
        except ValidationError:
            raise ValidationError("Notebook failed to validate; the nbgrader metadata may be corrupted.") from None
        return nb, resources


class SandboxedExecute(Execute):
    """nbgrader's Execute with the kernel in the sandbox, output capped, and a dead kernel handled:
    the cells after it are marked as not run (they score 0), never left looking passed."""

    def __init__(self, *, sandbox: Sandbox, workdir: str, runtime: str, uid: int, warm: tuple[str, ...] = (),
                 **kwargs):
        super().__init__(**kwargs)
        self.sandbox, self.workdir, self.runtime, self.uid, self.warm = sandbox, workdir, runtime, uid, warm
        self.problems: list[str] = []
        self.output_bytes = 0
        self.output_full = False
        self.watchdog: Watchdog | None = None  # while a notebook runs

    async def _async_handle_timeout(self, timeout, cell=None):
        """Interrupt a cell past its time limit (nbclient), then give it `interrupt_grace` seconds to answer: one
        that ignores the interrupt (`except KeyboardInterrupt: pass` in a loop) has its kernel killed. nbclient
        alone would interrupt it again every `cell_timeout` until the notebook's limit killed it."""
        reply = await super()._async_handle_timeout(timeout, cell)  # nbgrader's: a CellTimeoutError as its reply
        channel = getattr(self.kc, "shell_channel", None)
        pid = getattr(getattr(self.km, "provisioner", None), "pid", None)
        if getattr(channel, "socket", None) is None or self.watchdog is None or pid is None:
            return reply  # (nothing to watch or kill: the notebook's limit still applies)
        if await channel.socket.poll(self.sandbox.interrupt_grace * 1000):
            return reply  # the cell stopped: the kernel's own reply comes, and is passed over, later
        self.watchdog.kill(pid, f"timed out ({self.sandbox.cell_timeout} s) and ignored its interrupt for "
                                f"{self.sandbox.interrupt_grace} s: kernel killed")
        raise DeadKernelError(self.watchdog.reason)

    def create_kernel_manager(self):
        self.km = SandboxedKernelManager(sandbox=self.sandbox, workdir=self.workdir, runtime=self.runtime,
                                         uid=self.uid, warm=self.warm, kernel_name="python3")
        return self.km

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values()) \
            + sum(len(line) for line in content.get("traceback", []))
        self.output_bytes += size
        if self.output_bytes > self.sandbox.output_mb * MB and msg["msg_type"] != "error":
            if not self.output_full:
                self.output_full = True
                self.problems.append(f"output limit ({self.sandbox.output_mb:g} MB) reached in cell "
                                     f"{name_of(self.nb.cells[cell_index], cell_index)}: the rest was dropped")
                outs.append(nbformat.v4.new_output("stream", name="stdout", text=(
                    f"\n[autograder: output limit of {self.sandbox.output_mb:g} MB reached; "
                    "further output dropped]\n")))
            return None
        return super().output(outs, msg, display_id, cell_index)

    def preprocess(self, nb, resources=None, km=None):
        from nbclient import NotebookClient

        NotebookClient.__init__(self, nb, km)  # this resets every trait from the configuration
        self.timeout, self.interrupt_on_timeout = self.sandbox.cell_timeout, True
        self.raise_on_iopub_timeout = False
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        dead = None
        with self.setup_kernel():
            pid_of = lambda: getattr(getattr(self.km, "provisioner", None), "pid", None)
            watchdog = Watchdog(pid_of, self.uid if self.sandbox.enabled else None, self.sandbox.memory_mb * MB,
                                self.sandbox.notebook_timeout)
            watchdog.start()
            self.watchdog = watchdog
            try:
                info = self.wait_for_reply(self.kc.kernel_info())
                self.km.seal()
                self.nb.metadata["language_info"] = info["content"]["language_info"]
                for index, cell in enumerate(self.nb.cells):
                    if cell.cell_type != "code":
                        continue
                    if dead:
                        not_run(cell, dead)
                        continue
                    try:
                        self.execute_cell(cell, index, store_history=True)
                    except CellTimeoutError:
                        self.problems.append(f"cell {name_of(cell, index)} timed out waiting for its output")
                        not_run(cell, "timed out waiting for its output")
                        continue
                    except DeadKernelError:
                        why = watchdog.reason or "the kernel died (it exited, crashed or was killed)"
                        dead = f"{why} in cell {name_of(cell, index)}"
                        not_run(cell, dead)
                        self.problems.append(dead + ": it and the cells after it scored 0")
                        continue
                    if any(o.output_type == "error" and o.ename == "CellTimeoutError" for o in cell.outputs):
                        self.problems.append(f"cell {name_of(cell, index)} timed out "
                                             f"({self.sandbox.cell_timeout} s) and was interrupted")
                    if any(o.output_type == "error" and "[Errno 28]" in o.evalue for o in cell.outputs):
                        self.problems.append(f"cell {name_of(cell, index)} filled its folder or /tmp (No space "
                                             f"left on device: {self.sandbox.work_mb} MB in its folder, "
                                             f"{self.sandbox.tmp_mb} MB in /tmp)")
                    if any(o.output_type == "error" and o.ename == "MemoryError" for o in cell.outputs):
                        self.problems.append(f"cell {name_of(cell, index)} ran out of memory (MemoryError: "
                                             f"{self.sandbox.address_space_mb} MB per process)")
            finally:
                watchdog.stop()
                self.watchdog = None
        self.set_widgets_metadata()
        return self.nb, self.resources


def name_of(cell: NotebookNode, index: int) -> str:
    """How a reason names a cell: its grade id, else its position."""
    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
    return f"'{grade_id}'" if grade_id else f"#{index + 1}"


def not_run(cell: NotebookNode, why: str) -> None:
    """Give a cell that never ran an error output, so that it scores 0."""
    cell.outputs = [nbformat.v4.new_output("error", ename=NOT_RUN, evalue=f"not run: {why}",
                                           traceback=[f"{NOT_RUN}: not run: {why}"])]


# ---------------------------------------------------------------------------------------------
# the job


_TEMPLATES: dict[str, bytes] = {}


def stamp(path: str | os.PathLike, revision: str) -> None:
    """Start a new SQLite gradebook at `path` with nbgrader's database revision, as nbgrader's Gradebook
    writes it first into a new database (which then needs no `alembic` run)."""
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (revision,))
    db.close()


def template(definition: dict) -> bytes:
    """An SQLite gradebook holding only the assignment's definition (made once per process)."""
    import warnings

    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    key = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    if key not in _TEMPLATES:
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's add_submission, harmless
        bindir = os.path.dirname(sys.executable)  # nbgrader runs `alembic` from PATH
        if bindir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        d = definition
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "gradebook.db")
            if d.get("alembic_version"):  # stamped as the course's gradebook: nbgrader need not run alembic
                stamp(path, d["alembic_version"])
            with Gradebook(f"sqlite:///{path}") as gb:
                gb.add_assignment(d["name"], duedate=d["duedate"])
                for nb in d["notebooks"]:
                    gb.add_notebook(nb["name"], d["name"], kernelspec=nb["kernelspec"])
                    for c in nb["grade_cells"]:
                        gb.add_grade_cell(c["name"], nb["name"], d["name"], max_score=c["max_score"],
                                          cell_type=c["cell_type"])
                    for name in nb["solution_cells"]:
                        gb.add_solution_cell(name, nb["name"], d["name"])
                    for c in nb["task_cells"]:
                        gb.add_task_cell(c["name"], nb["name"], d["name"], max_score=c["max_score"],
                                         cell_type=c["cell_type"])
                    for c in nb["source_cells"]:
                        gb.add_source_cell(c["name"], nb["name"], d["name"], cell_type=c["cell_type"],
                                           locked=c["locked"], source=c["source"], checksum=c["checksum"])
            with open(path, "rb") as fh:
                _TEMPLATES[key] = fh.read()
    return _TEMPLATES[key]


def build_gradebook(path: str, job: Job) -> str:
    """A private gradebook at `path`: the assignment's definition and this one student; its URL."""
    from nbgrader.api import Gradebook

    with open(path, "wb") as fh:
        fh.write(template(job.definition))
    url = f"sqlite:///{path}"
    with Gradebook(url) as gb:
        gb.add_student(job.student)
        gb.add_submission(job.assignment, job.student, **({"timestamp": job.timestamp} if job.timestamp else {}))
    return url


def read_grades(url: str, job: Job, result: Result) -> None:
    """Copy the private gradebook's grades and comments into the result."""
    from nbgrader.api import Gradebook

    with Gradebook(url) as gb:
        submission = gb.find_submission(job.assignment, job.student)
        for nb in submission.notebooks:
            result.grades[nb.name] = {g.name: {"auto_score": g.auto_score, "max_score": g.max_score,
                                               "needs_manual_grade": g.needs_manual_grade} for g in nb.grades}
            result.comments[nb.name] = {c.name: c.auto_comment for c in nb.comments}


def tampering_findings(job: Job, name: str, nb: NotebookNode) -> list[str]:
    """What the student's code cells of a notebook do that could change its tests (tampering.py): every
    code cell but the assignment's locked ones, known by grade id and source as the definition has them."""
    from .tampering import findings

    locked = {c["name"]: c["source"] for n in job.definition["notebooks"] if n["name"] == name
              for c in n["source_cells"] if c["locked"] and c["cell_type"] == "code"}
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            cells.append((name_of(cell, index), locked.get(grade_id) == cell.source, cell.source))
    return findings(cells)


def read_notebook(data: bytes) -> tuple[NotebookNode | None, str | None, int]:
    """The notebook in `data` (duplicate cell ids renumbered), or why it is not one; and how many
    cell ids were duplicates."""
    import warnings

    from .submissions import notebook_problem_text

    problem = notebook_problem_text(data)
    if problem:
        return None, problem, 0
    ids = [c.get("id") for c in json.loads(data).get("cells", []) if isinstance(c, dict) and c.get("id")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbformat renumbers duplicate ids, with a warning
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    return nb, None, len(ids) - len(set(ids))


_SLOTS = itertools.count()  # jobs running at once in one process (Dask threads) get user ids of their own


@functools.lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """Why this machine (e.g. a Dask worker) cannot run the sandbox, checked once per process."""
    from .sandbox import unavailable

    return unavailable()


def grade(job: Job, slot: int | None = None) -> Result:
    """Grade one submission in a private folder, the kernel in the sandbox; return the result as data."""
    started = time.monotonic()
    result = Result(job.assignment, job.student, timestamp=job.timestamp, reasons=list(job.notes))
    sandbox = Sandbox(config=job.config)
    if sandbox.enabled and (why := sandbox_problem()):
        result.failed = True
        result.reasons.append(f"this machine cannot sandbox kernels: {why}")
        return result
    uid = sandbox.uid_base + (os.getpid() % 65536) * 64 + (next(_SLOTS) % 64 if slot is None else slot)
    tmp = ""
    try:
        tmp = tempfile.mkdtemp(prefix="dcv-grade-")
        os.chmod(tmp, 0o755)
        work = os.path.join(tmp, "work")
        os.mkdir(work, 0o755)
        contents = {**job.contents(), **job.overwrite}
        for rel, data in contents.items():
            dest = os.path.join(work, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as fh:
                fh.write(data)
        if sandbox.enabled:
            for dirpath, dirnames, filenames in os.walk(tmp):
                for name in [*dirnames, *filenames]:
                    os.lchown(os.path.join(dirpath, name), uid, uid)
        url = build_gradebook(os.path.join(tmp, "gradebook.db"), job)
        ran = 0
        for i, nb in enumerate(job.definition["notebooks"]):
            # Each notebook is taken as handed in (not from work/, which an earlier kernel could change, e.g.
            # into a link to a solution), its kernel's sockets and connection file in a new folder.
            runtime = os.path.join(tmp, f"run{i}")
            os.mkdir(runtime, 0o755)
            if sandbox.enabled:
                os.lchown(runtime, uid, uid)
            ran += grade_notebook(job, nb["name"], contents.get(f"{nb['name']}.ipynb"), work, runtime, url, uid,
                                  sandbox, result)
        read_grades(url, job, result)
        result.failed = ran == 0
    except GradingError as exc:  # no grade: the one recorded before (if any) stays, the next run grades it
        result.failed, result.grades = True, {}
        result.reasons.append(f"grading failed: {exc}")
    except Exception as exc:
        result.failed = True
        result.reasons.append(f"grading failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def grade_notebook(job: Job, name: str, data: bytes | None, work: str, runtime: str, url: str, uid: int,
                   sandbox: Sandbox, result: Result) -> bool:
    """Sanitize, execute and score one notebook (`data`: as handed in); False when it could not be run at all."""
    from nbgrader.api import Gradebook

    def zero(why: str) -> bool:
        result.reasons.append(f"{name}.ipynb: {why}: scored 0")
        with Gradebook(url) as gb:
            for g in gb.find_submission_notebook(name, job.assignment, job.student).grades:
                g.auto_score, g.needs_manual_grade = 0.0, False
            gb.db.commit()
        return False

    if data is None:
        return zero("missing")
    nb, problem, duplicates = read_notebook(data)
    if nb is None:
        return zero(problem)
    if duplicates:
        result.reasons.append(f"{name}.ipynb: {duplicates} duplicate cell id(s) renumbered")
    config = job.config
    resources = {"nbgrader": {"db_url": url, "assignment": job.assignment, "notebook": name,
                              "student": job.student}, "metadata": {"path": work}}
    try:
        for pp in (ClearOutput, DeduplicateIds, OverwriteKernelspec, RestoreCells, CheckCellMetadata):
            options = {"add_missing_cells": True} if pp is RestoreCells else {}
            nb, resources = pp(config=config, **options)(nb, resources)
    except Exception as exc:
        return zero(f"its grading metadata is broken ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    result.reasons += [f"{name}.ipynb: {note}" for note in resources.pop("dcv_notes", [])]
    review = tampering_findings(job, name, nb)
    if review:
        shown = review[:5] + ([f"and {len(review) - 5} more"] if len(review) > 5 else [])
        result.reasons.append(f"{name}.ipynb: needs review, its code could change what the tests see: "
                              + "; ".join(shown))
    gradeable = {c.metadata["nbgrader"]["grade_id"] for c in nb.cells if utils.is_grade(c)}
    execute = SandboxedExecute(sandbox=sandbox, workdir=work, runtime=runtime, uid=uid,
                               warm=job.warm, config=config)
    env = os.environ.copy()
    try:
        os.environ["NBGRADER_EXECUTION"] = "autograde"
        nb, resources = execute(nb, resources)
    except Exception as exc:  # the kernel could not start or be reached: the grader's failure, not the student's
        log = os.path.join(os.path.dirname(runtime), "kernel.log")
        said = open(log, errors="replace").read()[-2000:].strip().splitlines() if os.path.exists(log) else []
        raise GradingError(f"{name}.ipynb could not be run ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
                           f"{'; the kernel said: ' + said[-1][:200] if said else ''})") from None
    finally:
        os.environ.clear()
        os.environ.update(env)
    result.reasons += [f"{name}.ipynb: {p}" for p in execute.problems]
    for pp in (IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades, AssignLatePenalties,
               CheckCellMetadata):
        nb, resources = pp(config=config)(nb, resources)
    with Gradebook(url) as gb:  # graded cells the student deleted and that were not restored
        lost = []
        for g in gb.find_submission_notebook(name, job.assignment, job.student).grades:
            if g.name not in gradeable:
                g.auto_score, g.needs_manual_grade = 0.0, False
                result.reasons.append(f"{name}.ipynb: cell '{g.name}' was deleted: scored 0")
            elif g.auto_score is not None and g.auto_score < g.max_score:
                lost.append(g.name)
            if review and g.name in gradeable:  # an instructor confirms these points (or not)
                g.needs_manual_grade = True
        gb.db.commit()
    if lost:  # the plain reason for points lost: these tests failed (their messages are in feedback)
        shown = ", ".join(lost[:6]) + (f" and {len(lost) - 6} more" if len(lost) > 6 else "")
        result.reasons.append(f"{name}.ipynb: points lost in {len(lost)} cell(s): {shown}")
    result.reasons += [f"{name}.ipynb: {change}" for change in make_inert(nb)]  # before any browser shows it
    result.notebooks[name] = nbformat.writes(nb)
    return True
