"""Pytest plugin of the course: run the MyST chapters with nbval, once per test run.

`pytest --nbval-lax chapters solutions` executes every chapter (converted from MyST Markdown by
jupytext) and every nbgrader source notebook cell by cell. A chapter whose cells all pass is stored,
with its outputs, in the Jupyter Book execution cache (`_build/.jupyter_cache`): the book build then
renders those outputs instead of executing the chapter a second time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent
CHAPTERS = ROOT / "chapters"
BOOK_CACHE = ROOT / "_build" / ".jupyter_cache"

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


ORDER = ("unit", "notebook", "grading", "book", "browser")


def _stage(item) -> int:
    """Order tests: unit tests, notebooks, grading end to end, the book build, then the built book
    (and JupyterLab) in a browser."""
    if _nbval is not None and isinstance(item, _nbval.IPyNbCell):
        return ORDER.index("notebook")
    name = Path(str(item.fspath)).name
    if name == "test_book.py":
        return ORDER.index("book")
    if name == "test_browser.py":
        return ORDER.index("browser")
    if name.startswith("test_grading"):
        return ORDER.index("grading")
    return ORDER.index("unit")


def pytest_collection_modifyitems(config, items):
    """Mark notebook cells slow and run the suite in a fixed order of stages."""
    for item in items:
        if _nbval is not None and isinstance(item, _nbval.IPyNbCell):
            item.add_marker(pytest.mark.slow)
    items.sort(key=_stage)  # stable: keeps the order within each stage
