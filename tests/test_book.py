"""The book: does it build with warnings as errors, reuse this run's execution, and leak nothing?"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
LEAKS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def toc_files() -> list[str]:
    """Every file named in _toc.yml, root first."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [entry["file"] for entry in part["chapters"]]
    return files


@pytest.fixture(scope="module")
def build(request) -> str:
    """Build the book once with the README's command; return its log."""
    proc = subprocess.run(["bash", "scripts/book.sh"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the book build failed:\n{log[-6000:]}"
    return log


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
    """Did the book take the chapters that nbval executed in this run from the cache?"""
    executed = getattr(request.config, "dcv_cached_chapters", set())
    if not executed:
        pytest.skip("no chapter was executed by nbval in this run")
    reused = set(re.findall(r"chapters/([\w.-]+\.md): Using cached notebook", build))
    assert executed <= reused, f"executed again by the book build: {sorted(executed - reused)}"
