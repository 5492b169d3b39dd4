"""Pytest plugin of the course: run the MyST chapters with nbval, once per test run.

`pytest --nbval-lax chapters solutions` executes every chapter (converted from MyST Markdown by
jupytext) and every nbgrader source notebook cell by cell. A chapter whose cells all pass is stored,
with its outputs, in the Jupyter Book execution cache (`_build/.jupyter_cache`): the book build then
renders those outputs instead of executing the chapter a second time.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent
CHAPTERS = ROOT / "chapters"
BOOK_CACHE = ROOT / "_build" / ".jupyter_cache"
# One empty file per chapter the last chapters stage executed and cached (written by each xdist
# worker for its own chapters), read by the book stage, another process.
CHAPTERS_CACHED = ROOT / "_build" / ".chapters_cached"

# Quiet TensorFlow in every kernel the tests start (kernels inherit this environment).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

try:
    import nbval.plugin as _nbval
except ImportError:  # nbval is in requirements.txt; without it only unit tests run
    _nbval = None


if _nbval is not None:

    class MystNotebook(_nbval.IPyNbFile):
        """A MyST Markdown chapter: converted by jupytext, executed by nbval, cached for the book."""

        def collect(self):
            """Yield nbval's cell items for the jupytext conversion of the chapter."""
            import jupytext

            nb = jupytext.read(self.path)
            self._started = time.monotonic()
            self._passed: set[int] = set()
            self._n_code = sum(cell.cell_type == "code" for cell in nb.cells)
            # nbval reads the file with nbformat.read: hand it the converted notebook instead.
            reader = SimpleNamespace(read=lambda *args, **kwargs: nb)
            with mock.patch.object(_nbval, "nbformat", reader):
                yield from super().collect()

        def record(self, item: _nbval.IPyNbCell, passed: bool) -> None:
            """Keep a cell's outputs in the notebook; remember whether it passed."""
            item.cell.outputs = list(item.test_outputs or [])
            if passed:
                self._passed.add(item.cell_num)

        def teardown(self) -> None:
            """Stop the kernel; store the executed chapter in the book's cache if every cell passed."""
            super().teardown()
            if len(self._passed) == self._n_code:
                cache_executed_notebook(self.nb, self.path, time.monotonic() - self._started)
                cached_chapters(self.config).add(self.path.name)
                CHAPTERS_CACHED.mkdir(parents=True, exist_ok=True)
                (CHAPTERS_CACHED / self.path.name).touch()

    def pytest_collect_file(file_path: Path, parent):
        """Collect `chapters/*.md` as notebooks when nbval is on."""
        opt = parent.config.option
        if (opt.nbval or opt.nbval_lax) and file_path.suffix == ".md" and file_path.parent == CHAPTERS:
            return MystNotebook.from_parent(parent, path=file_path)
        return None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        """After a chapter cell runs, record its outputs for the book."""
        outcome = yield
        if call.when == "call" and isinstance(getattr(item, "parent", None), MystNotebook):
            item.parent.record(item, outcome.get_result().passed)


def cached_chapters(config: pytest.Config) -> set[str]:
    """Names of the chapters this test run executed and stored in the book's cache."""
    if not hasattr(config, "dcv_cached_chapters"):
        config.dcv_cached_chapters = set()
    return config.dcv_cached_chapters


def cache_executed_notebook(nb, source: Path, seconds: float) -> None:
    """Put an executed notebook into Jupyter Book's execution cache, keyed by its code."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        for output in cell.outputs:
            if output.get("output_type") == "execute_result":
                output["execution_count"] = count
    cache = get_cache(str(BOOK_CACHE))
    cache.cache_notebook_bundle(
        CacheBundleIn(nb, str(source), data={"execution_seconds": seconds}),
        check_validity=True,
        overwrite=True,
    )


# The stages of a full test run, in order, and what each runs (globs relative to the repository;
# "unit" is every test module no other stage names). `scripts/run_tests.py` runs them one by one and
# times them; a single pytest run orders its tests the same way.
STAGES: dict[str, tuple[str, ...]] = {
    "unit": ("tests/test_*.py",),
    "chapters": ("chapters/*.md",),
    "solutions": ("solutions/*/*.ipynb",),
    "grading": ("tests/test_grading*.py", "tests/test_sandbox*.py"),
    "book": ("tests/test_book.py",),
    "browser": ("tests/test_browser*.py",),
}
# Files that take longest, started first, longest first, when a stage runs on two workers (pytest-xdist):
# the other files then fill in beside them (seconds on 2 cores, from the stages' JUnit reports: chapters 52,
# 33, 18; solutions 106, 105, 20; grading 73, 62, 36, 35, 33, 18; unit 32, 16, 13).
SLOWEST_FIRST = ("solutions/ex10_transfer_learning", "solutions/ex09_mnist", "solutions/ex11_style_transfer",
                 "chapters/05_pretrained.md", "chapters/04_architectures.md", "chapters/06_localization.md",
                 "tests/test_grading_all.py", "tests/test_grading_hostile.py", "tests/test_sandbox.py",
                 "tests/test_grading.py", "tests/test_grading_parallel.py", "tests/test_grading_ex09.py",
                 "tests/test_pretrained.py", "tests/test_data.py", "tests/test_autograder_cli.py")


@functools.cache
def stage_paths(stage: str) -> tuple[Path, ...]:
    """The files a stage runs (a unit test module is one that no other stage claims)."""
    claimed = {p for name, globs in STAGES.items() if name != "unit" for g in globs for p in ROOT.glob(g)}
    paths = {p for g in STAGES[stage] for p in ROOT.glob(g)}
    if stage == "unit":
        paths -= claimed
    rank = lambda p: next((i for i, s in enumerate(SLOWEST_FIRST) if str(p.relative_to(ROOT)).startswith(s)),
                          len(SLOWEST_FIRST))
    return tuple(sorted(paths, key=lambda p: (rank(p), p)))


def _stage(item) -> int:
    """The index of the stage an item belongs to (unit tests, chapters, solutions, grading, book, browser)."""
    path = Path(str(item.fspath)).resolve()
    for index, stage in enumerate(STAGES):
        if path in stage_paths(stage):
            return index
    return 0


def pytest_collection_modifyitems(config, items):
    """Mark notebook cells slow and run the suite in the order of the stages."""
    for item in items:
        if _nbval is not None and isinstance(item, _nbval.IPyNbCell):
            item.add_marker(pytest.mark.slow)
    items.sort(key=_stage)  # stable: keeps the order within each stage


def chapters_cached_by_tests() -> set[str]:
    """Names of the chapters that the last chapters stage (or a test run) executed and cached."""
    return {p.name for p in CHAPTERS_CACHED.glob("*.md")}


@pytest.fixture
def float32_policy():
    """Restore Keras' float32 dtype policy after a test that changes it (tests of dcv.training and dcv.grader)."""
    yield
    import keras

    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def zygote_server():
    """One warm zygote (every module a zygote may import) for the grading commands this test process runs."""
    from autograder.sandbox import ZygoteServer
    from autograder.zygote import WARMABLE

    server = ZygoteServer(WARMABLE)
    yield server
    server.close()


@pytest.fixture(scope="module")
def shared_zygote(zygote_server):
    """Grading commands of the module served by `zygote_server` ($DCV_ZYGOTE_SOCKET): exercise 9's and
    test_grading_all.py's ten commands would otherwise each import TensorFlow (~7 CPU-s) in a zygote of
    their own, exactly as an instructor's command does (tests/test_sandbox.py checks both ways)."""
    os.environ["DCV_ZYGOTE_SOCKET"] = zygote_server.path
    yield zygote_server
    os.environ.pop("DCV_ZYGOTE_SOCKET", None)
