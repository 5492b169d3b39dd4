"""The book and the student's JupyterLab in a real browser, offline: headless Chromium via Playwright.

The built book is served on 127.0.0.1; every request that would leave this machine is blocked and
recorded, so a page that needs the network (a CDN's MathJax, a web font) fails here as it would
for a reader offline. Screenshots go to `_build/screenshots/` (listed at the end of the run).
Chromium is Debian's (`scripts/apt/browser.txt`); Playwright never downloads a browser here.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import nbformat
import pytest
import yaml
from test_book import HTML, ROOT, build_book, toc_files
from test_grading import EX02, solve, source_nb

from autograder.cli import course_dir

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("DCV_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling Google services, which on a
# closed network only makes noise and slows every page down.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "_build" / "screenshots"
TIMEOUT_MS = 60_000
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


# ---------------------------------------------------------------------------------------------
# fixtures: the built book on a local web server, one Chromium, screenshots listed at the end


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log on the test output
        pass


@pytest.fixture(scope="module")
def book(request) -> str:
    """The book built by the README's command (once per run, shared with test_book), served locally."""
    build_book(request.config)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(HTML)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def shots(request) -> Path:
    """The screenshot folder, emptied first; its files are listed when the module ends."""
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    yield SHOTS
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for shot in sorted(SHOTS.glob("*.png")):
            reporter.write_line(f"screenshot: {shot.relative_to(ROOT)}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with a fresh profile; requests to other hosts are blocked and recorded."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `bash scripts/setup.sh` as root "
                    "(it installs scripts/apt/browser.txt), or set DCV_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        context.external = []

        def offline(route):
            if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
                route.continue_()
            else:
                context.external.append(route.request.url)
                route.abort("internetdisconnected")

        context.route("**/*", offline)
        yield context
        context.close()


class Visit:
    """A page opened in the browser, with what went wrong while it loaded."""

    def __init__(self, context, url: str):
        self.page = context.new_page()
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.external: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} ({r.status})"))
        before = len(context.external)
        self.page.goto(url, wait_until="load")
        self.external = context.external[before:]

    def _console(self, message) -> None:
        # Chromium asks every site for /favicon.ico by itself; a 404 there is no error of the page
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            self.errors.append(f"{message.text} ({message.location.get('url')})")

    def typeset(self) -> bool:
        """Wait until MathJax (if the page asks for it) has typeset every formula; False if it never starts."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.wait_for_function(
                "() => !window.MathJax || !!(MathJax.startup && MathJax.startup.promise)", timeout=20_000)
        except PlaywrightTimeout:
            return False
        self.page.evaluate("() => window.MathJax ? MathJax.startup.promise.then(() => true) : true")
        return True

    def close(self) -> None:
        self.page.close()


def book_pages() -> list[str]:
    """Every HTML page of the built book, relative to its root (theme and sources left out)."""
    return sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
                  if not {"_static", "_sources", "_images"} & set(p.relative_to(HTML).parts))


def toc_page(name: str) -> str:
    return "index.html" if name == toc_files()[0] and not (HTML / f"{name}.html").exists() else f"{name}.html"


CHAPTERS = [f for f in toc_files() if f.startswith("chapters/")]
PAGE_STATE = """() => {
  const skip = 'pre, code, script, style, mjx-container, .highlight, textarea';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement.closest(skip) && /\\\\\\(|\\\\\\[/.test(n.textContent)) raw.push(n.textContent.trim().slice(0, 80));
  }
  return {
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    broken_images: [...document.querySelectorAll('img')].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
    figures: [...document.querySelectorAll('.cell_output img')].map(i => {
      const r = i.getBoundingClientRect();
      return {src: i.src, loaded: i.complete && i.naturalWidth > 0, width: r.width, height: r.height};
    }),
    mathjax: [...document.querySelectorAll('script[src*="mathjax" i]')].map(s => s.src),
    formulas: document.querySelectorAll('.math').length,
    typeset: document.querySelectorAll('.math mjx-container, mjx-container.MathJax').length,
    math_errors: [...document.querySelectorAll('mjx-merror, merror')].map(e => e.textContent),
    raw_tex: raw,
  };
}"""


@pytest.fixture(scope="module")
def crawl(book, browser) -> dict[str, dict]:
    """Open every page of the book once; what each showed and what went wrong while it loaded."""
    pages, started = {}, time.monotonic()
    for name in book_pages():
        visit = Visit(browser, f"{book}/{name}")
        if name == "index.html" and not (ROOT / "index.md").exists():  # jupyter-book's redirect
            visit.page.wait_for_url(f"{book}/{toc_files()[0]}.html")
            visit.close()
            continue
        started_mathjax = visit.typeset()
        pages[name] = {**visit.page.evaluate(PAGE_STATE), "started_mathjax": started_mathjax,
                       "errors": visit.errors, "failed": visit.failed, "external": visit.external}
        visit.close()
    print(f"opened {len(pages)} pages in {time.monotonic() - started:.0f} s")
    return pages


def test_every_page_loads_offline_with_no_error_or_broken_link(book, crawl):
    """Does every page load with no console error, no request off this machine, and no broken
    local link, anchor or image?"""
    problems, ids = [], {name: set(page["ids"]) for name, page in crawl.items()}
    for name, page in crawl.items():
        problems += [f"{name}: console error: {e}" for e in page["errors"]]
        problems += [f"{name}: failed request: {f}" for f in page["failed"]]
        problems += [f"{name}: request off this machine: {u}" for u in page["external"]]
        problems += [f"{name}: broken image: {src}" for src in page["broken_images"]]
        for link in page["links"]:
            parts = urlsplit(link)
            if parts.hostname not in LOCAL_HOSTS or parts.scheme not in {"http", "https"}:
                continue
            target = parts.path.lstrip("/") or "index.html"
            if target.endswith("/"):
                target += "index.html"
            if not (HTML / target).is_file():
                problems.append(f"{name}: broken link to {target}")
            elif parts.fragment and target in ids and parts.fragment not in ids[target]:
                problems.append(f"{name}: link to a missing anchor {target}#{parts.fragment}")
    assert not problems, "\n".join(sorted(set(problems))[:60])


def test_every_formula_is_typeset_by_the_books_own_mathjax(book, crawl):
    """Is every formula typeset, by MathJax served from the book, with no raw TeX left?"""
    problems, n_formulas = [], 0
    for name, page in crawl.items():
        n_formulas += page["formulas"]
        if not page["formulas"]:
            continue
        if not page["started_mathjax"]:
            problems.append(f"{name}: MathJax never started")
        problems += [f"{name}: MathJax loaded from {src}" for src in page["mathjax"]
                     if not src.startswith(f"{book}/_static/mathjax/")]
        problems += [f"{name}: MathJax error: {e}" for e in page["math_errors"]]
        problems += [f"{name}: raw TeX left: {t!r}" for t in page["raw_tex"]]
        if page["typeset"] < page["formulas"]:
            problems.append(f"{name}: {page['formulas']} formulas, {page['typeset']} typeset")
    assert n_formulas > 0, "no formula in the whole book: is MathJax still configured?"
    assert not problems, "\n".join(problems[:60])


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: Path(c).name)
def test_each_chapter_shows_its_figures(crawl, chapter):
    """Are all the figures that the chapter's execution drew on its page, loaded and visibly large?"""
    import jupytext
    from jupyter_cache import get_cache

    # the chapter as the book rendered it: its code merged with the outputs in the execution cache
    _, executed = get_cache(str(ROOT / "_build" / ".jupyter_cache")).merge_match_into_notebook(
        jupytext.read(ROOT / f"{chapter}.md"))
    hidden = {"remove-cell", "remove-output", "remove_cell", "remove_output"}
    expected = sum(1 for cell in executed.cells if cell.cell_type == "code"
                   and not hidden & set(cell.metadata.get("tags", []))
                   for out in cell.get("outputs", [])
                   if {"image/png", "image/jpeg", "image/svg+xml"} & set(out.get("data", {})))
    figures = crawl[toc_page(chapter)]["figures"]
    assert expected > 0, f"{chapter}: its execution drew no figure"
    assert len(figures) == expected, f"{chapter}: {expected} figures drawn, {len(figures)} on the page"
    bad = [f for f in figures if not f["loaded"] or f["width"] < 50 or f["height"] < 50]
    assert not bad, f"{chapter}: figures not shown: {bad}"


def test_a_chapter_with_formulas_and_figures_looks_right(book, browser, shots):
    """Screenshot: the pooling chapter at its first figure, formulas typeset (for a person to look at)."""
    visit = Visit(browser, f"{book}/{toc_page('chapters/03_pooling')}")
    assert visit.typeset()
    visit.page.locator(".cell_output img").first.scroll_into_view_if_needed()
    visit.page.screenshot(path=str(shots / "book-03_pooling-figure.png"))
    visit.close()
    assert not visit.errors, visit.errors


def test_search_finds_the_pooling_chapter(book, browser, shots):
    """Does the book's search page list the pooling chapter for "pooling"?"""
    visit = Visit(browser, f"{book}/search.html?q=pooling")
    results = visit.page.locator("#search-results ul.search li a")
    results.first.wait_for()
    hrefs = [results.nth(i).get_attribute("href") for i in range(results.count())]
    visit.page.screenshot(path=str(shots / "book-search-pooling.png"))
    visit.close()
    assert any(urldefrag(h)[0].endswith("chapters/03_pooling.html") for h in hrefs), hrefs


def test_pages_link_to_the_repository_and_launch_binder(book, browser, shots):
    """Does a chapter link to the repository set in _config.yml, and launch itself on Binder?"""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo, branch = config["repository"]["url"].rstrip("/"), config["repository"].get("branch", "main")
    org_repo = "/".join(urlsplit(repo).path.strip("/").split("/")[:2])
    chapter = CHAPTERS[1]
    visit = Visit(browser, f"{book}/{toc_page(chapter)}")
    visit.typeset()
    hrefs = visit.page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    visit.page.locator("mjx-container").first.scroll_into_view_if_needed()  # the buttons stay in the header
    visit.page.screenshot(path=str(shots / f"book-{Path(chapter).name}-formulas.png"))
    visit.close()
    assert repo in hrefs, f"no link to the repository {repo}"
    binder = f"{config['launch_buttons']['binderhub_url'].rstrip('/')}/v2/gh/{org_repo}/{branch}?urlpath=lab/tree/{chapter}.md"
    assert binder in hrefs, f"no Binder link {binder}"


def test_assignment_page_says_how_to_run_it(book, browser, shots):
    """Does an assignment page carry the "run this notebook" note, with working download links?"""
    visit = Visit(browser, f"{book}/assignments/{EX02}.html")
    note = visit.page.locator("blockquote", has_text="Run this notebook yourself")
    note.scroll_into_view_if_needed()
    text = note.inner_text()
    hrefs = note.evaluate("n => [...n.querySelectorAll('a[href]')].map(a => a.href)")
    visit.page.screenshot(path=str(shots / f"book-{EX02}-note.png"))
    visit.close()
    wheel = [h for h in hrefs if h.endswith(".whl")]
    assert wheel and "requirements.txt" in " ".join(hrefs), hrefs
    for href in hrefs:
        with urllib.request.urlopen(href, timeout=10) as response:
            assert response.status == 200, href
    assert "pip install" in text and "%pip install" in text, text


# ---------------------------------------------------------------------------------------------
# JupyterLab: a student validates an assignment, an instructor opens formgrader


def start_lab(root: Path, tmp: Path) -> tuple[subprocess.Popen, str, str]:
    """Start JupyterLab (the course's environment) in a folder; return it, its URL and its token."""
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("DCV_COURSE_DIR", None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"]  # no update checks, no extension search on PyPI
    if os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", token


def wait_for_lab(proc: subprocess.Popen, url: str, token: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within 180 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def labs(book, tmp_path_factory):
    """Two JupyterLab servers, started together: a student's folder and an instructor's course folder."""
    student, teacher = tmp_path_factory.mktemp("student"), tmp_path_factory.mktemp("teacher")
    released = nbformat.read(ROOT / "assignments" / f"{EX02}.ipynb", as_version=4)  # as downloaded from the book
    work = student / "work"
    work.mkdir()
    nbformat.write(released, work / f"{EX02}.ipynb")
    nbformat.write(solve(released, source_nb(EX02)), work / f"{EX02}_solved.ipynb")
    course = teacher / "course"
    shutil.copytree(ROOT / "_build" / "course", course, ignore=shutil.ignore_patterns("staged.json"))
    course_dir(argparse.Namespace(course_dir=str(course)))  # its nbgrader_config.py, for its new place
    servers = {"student": (*start_lab(work, student), student / "lab.log"),
               "teacher": (*start_lab(course, teacher), teacher / "lab.log")}
    try:
        for proc, url, token, log in servers.values():
            wait_for_lab(proc, url, token, log)
        yield {**{who: (url, token) for who, (_, url, token, _) in servers.items()}, "course": course}
    finally:
        for proc, *_ in servers.values():
            proc.terminate()
        for proc, *_ in servers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def open_notebook(browser, url: str, token: str, name: str) -> Visit:
    """Open a notebook in JupyterLab and wait until its kernel is idle (as the status bar says)."""
    # a workspace of its own, reset: JupyterLab would otherwise reopen the notebooks of earlier tests
    visit = Visit(browser, f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}")
    visit.page.locator(".jp-NotebookPanel-toolbar .validate-button").wait_for()
    visit.page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=120_000)
    return visit


def run_all(visit: Visit) -> None:
    page = visit.page
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function("""() => {
        const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')];
        return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
    }""", timeout=120_000)


def validate(visit: Visit, shot: Path | None) -> tuple[str, str]:
    """Press nbgrader's Validate; return the result dialog's class (success, failed, ...) and text."""
    page = visit.page
    page.locator(".validate-button").click()
    body = page.locator(".jp-Dialog [class*='validation-']")
    body.wait_for(timeout=180_000)
    kind = re.search(r"validation-(\w[\w-]*)", body.get_attribute("class")).group(1)
    text = body.inner_text()
    if shot:
        page.screenshot(path=str(shot))
    page.locator(".jp-Dialog button.jp-mod-accept").click()
    return kind, text


def test_jupyterlab_runs_a_solved_assignment_and_validate_reports_success(labs, browser, shots):
    """Does a released assignment, solved, run in JupyterLab with no error, and Validate say success?"""
    url, token = labs["student"]
    visit = open_notebook(browser, url, token, f"{EX02}_solved.ipynb")
    run_all(visit)
    errors = visit.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count()
    kind, text = validate(visit, shots / "jupyterlab-validate-success.png")
    visit.close()
    assert errors == 0, "an error output after running all cells"
    assert kind == "success" and "passes all the tests" in text, (kind, text)


def test_jupyterlab_validate_reports_failure_for_an_untouched_assignment(labs, browser, shots):
    """Does Validate report failing cells for the assignment as released (nothing answered)?"""
    url, token = labs["student"]
    visit = open_notebook(browser, url, token, f"{EX02}.ipynb")
    kind, text = validate(visit, shots / "jupyterlab-validate-failure.png")
    visit.close()
    assert kind == "failed" and "The following cell failed" in text, (kind, text[:500])
    assert "NotImplementedError" in text, text[:500]


def test_formgrader_loads_for_the_instructor(labs, browser, shots):
    """Does formgrader, opened in the course folder, list the released assignments?"""
    url, token = labs["teacher"]
    visit = Visit(browser, f"{url}/formgrader?token={token}")
    visit.page.get_by_text(EX02, exact=True).first.wait_for()
    visit.page.screenshot(path=str(shots / "formgrader.png"))
    errors = [e for e in visit.errors]
    visit.close()
    assert not errors, errors


def test_a_students_script_never_runs_in_formgrader(labs, browser, shots, tmp_path):
    """A student's markdown answer and outputs that hold scripts, graded, then opened by the instructor in
    formgrader: does none of them run (they would run with the instructor's session, whose API writes files
    and runs code), and does the grader see the answer as written?"""
    import sqlite3

    from test_grading import cli

    url, token = labs["teacher"]
    course = labs["course"]
    released = nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    nb = solve(released, source_nb(EX02))
    answer = next(c for c in nb.cells if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("solution"))
    answer.source = "My answer. <img src=x onerror=\"window.ran = (window.ran || []).concat('markdown')\">"
    nb.cells.insert(3, nbformat.v4.new_code_cell(
        "from IPython.display import HTML, Javascript, display\n"
        "display(HTML('<img src=x onerror=\"window.ran = (window.ran || []).concat(\\'html\\')\">'))\n"
        "display(Javascript('window.ran = (window.ran || []).concat(\"javascript\")'))"))
    (tmp_path / "mallory").mkdir()
    nbformat.write(nb, tmp_path / "mallory" / f"{EX02}.ipynb")
    graded = cli("autograde", EX02, str(tmp_path), course=course)
    assert graded.returncode == 0, graded.stdout + graded.stderr
    assert "its text is shown as written (attribute onerror)" in graded.stdout
    with sqlite3.connect(course / "gradebook.db") as db:
        (notebook_id,), = db.execute(
            "SELECT n.id FROM submitted_notebook n JOIN submitted_assignment a ON n.assignment_id = a.id "
            "WHERE a.student_id = 'mallory'").fetchall()
    visit = Visit(browser, f"{url}/formgrader?token={token}")
    visit.page.goto(f"{url}/formgrader/submissions/{notebook_id}/?index=0", wait_until="load")
    shown = visit.page.get_by_text("Shown as written by the grader").first
    shown.wait_for()
    shown.scroll_into_view_if_needed()
    visit.page.wait_for_timeout(1000)  # time for an image's onerror to fire
    visit.page.screenshot(path=str(shots / "formgrader_hostile_answer.png"))
    ran = visit.page.evaluate("() => window.ran || []")
    assert "<img src=x onerror=" in visit.page.content().replace("&lt;", "<")  # the answer, as written
    visit.close()
    assert ran == [], f"the student's code ran in formgrader: {ran}"
