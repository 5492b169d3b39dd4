"""The book: does it build with warnings as errors, reuse this run's execution, and leak nothing?"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import chapters_cached_by_tests

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
# A rebuild with nothing changed (README: the two commands in any order) took 8.5 s on this 2-core
# host (82 s before stage_assignments.py skipped unchanged work); issue 13 asks for under 60 s.
REBUILD_SECONDS = 60
LEAKS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def toc_files() -> list[str]:
    """Every file named in _toc.yml, root first."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [entry["file"] for entry in part["chapters"]]
    return files


def book_sh(timeout: int = 1800) -> tuple[int, str, float]:
    """Run the README's `bash scripts/book.sh`; its exit status, log and seconds."""
    started = time.monotonic()
    proc = subprocess.run(["bash", "scripts/book.sh"], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def build_book(config: pytest.Config) -> str:
    """Build the book once per test run (test_book and test_browser share it); return its log.

    Run as the README allows, after a test run: pytest's own `.pytest_cache/` (with its README.md)
    is made first, as every earlier `pytest` run leaves it, so that the build must ignore it.
    """
    if not hasattr(config, "dcv_book_build"):
        if config.cache is not None:
            config.cache.mkdir("dcv-book")
        config.dcv_book_build = book_sh()
    status, log, seconds = config.dcv_book_build
    assert status == 0, f"the book build failed:\n{log[-6000:]}"
    return log


@pytest.fixture(scope="module")
def build(request) -> str:
    """Build the book once with the README's command; return its log."""
    return build_book(request.config)


@pytest.mark.slow
def test_book_builds_after_a_test_run(build):
    """Did the book build (warnings as errors) with pytest's cache folder, README.md included, beside it?"""
    assert (ROOT / ".pytest_cache" / "README.md").is_file(), "pytest made no .pytest_cache/README.md"
    assert "build succeeded" in build


@pytest.mark.slow
def test_rebuild_with_nothing_changed_stages_reads_and_executes_nothing(build):
    """Does `bash scripts/book.sh` a second time re-stage nothing, re-read no page and take < 60 s?"""
    status, log, seconds = book_sh(timeout=600)
    print(f"rebuild with nothing changed: {seconds:.1f} s")
    assert status == 0, f"the second build failed:\n{log[-6000:]}"
    assert "stage_assignments: assignments up to date" in log, log[-3000:]
    assert "stage_assignments: wheel up to date" in log, log[-3000:]
    assert re.search(r"updating environment: .*0 added, 0 changed, 0 removed", log), log[-3000:]
    assert "Executing notebook" not in log, "the rebuild executed a chapter again"
    assert seconds < REBUILD_SECONDS, f"the rebuild took {seconds:.0f} s (at most {REBUILD_SECONDS} s)"


@pytest.mark.slow
def test_dcv_wheel_installs_and_imports(build, tmp_path):
    """Does the `dcv` wheel that the assignment pages link install on its own and import?"""
    wheels = list((HTML / "_static").glob("dcv-*.whl"))
    assert len(wheels) == 1, f"expected one dcv wheel in the book, found {wheels}"
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                          "--target", str(target), str(wheels[0])], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = subprocess.run([sys.executable, "-c", "import dcv, sys; print(dcv.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.startswith(str(target)), probe.stdout + probe.stderr
    assert (HTML / "_static" / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()


@pytest.mark.slow
def test_every_toc_page_is_built(build):
    """Is there an HTML page for every entry of the table of contents?"""
    missing = [f for f in toc_files() if not (HTML / f"{f}.html").exists()
               and not (f == toc_files()[0] and (HTML / "index.html").exists())]
    assert not missing, f"pages not built: {missing}"


@pytest.mark.slow
def test_no_page_shows_an_error(build):
    """Does any page carry a Python traceback or an error output?"""
    bad = [str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
           if re.search(r"Traceback \(most recent call last\)|class=\"output traceback", p.read_text())]
    assert not bad, f"error output on: {bad}"


@pytest.mark.slow
def test_no_solution_or_hidden_test_is_published(build):
    """Do solution regions or hidden tests appear anywhere in the built site?"""
    bad = [str(p.relative_to(HTML)) for p in HTML.rglob("*") if p.is_file()
           and p.suffix in {".html", ".ipynb", ".md", ".txt", ".py"}
           and any(marker in p.read_text(errors="ignore") for marker in LEAKS)]
    assert not bad, f"solution or hidden-test text in: {bad}"


@pytest.mark.slow
def test_chapters_executed_by_this_run_are_not_executed_again(build, request):
    """Did the book take the chapters that nbval executed (this run or the chapters stage before) from the cache?"""
    executed = getattr(request.config, "dcv_cached_chapters", set()) or chapters_cached_by_tests()
    if not executed:
        pytest.skip("no chapter was executed by nbval in this run or the last chapters stage")
    reused = set(re.findall(r"chapters/([\w.-]+\.md): Using cached notebook", build))
    assert executed <= reused, f"executed again by the book build: {sorted(executed - reused)}"
