"""Stage what the book shows besides its chapters: the released assignments and the `dcv` wheel.

The book shows each assignment as the student receives it: nbgrader's release, with solutions
and hidden tests removed, plus a "run this notebook" note (what to install, from where). Sources
in solutions/ are never published. Next to them, in `_build/static/` (served as `_static/`), the
helper package as a wheel and requirements.txt, so that a downloaded assignment runs elsewhere.

Each part is redone only when its inputs changed (their SHA-256 is kept in `_build/course/`), and a
staged file is rewritten only when its content changed: a rebuild with nothing changed runs no
nbgrader and makes Sphinx re-read nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "_build" / "course"
TARGET = ROOT / "assignments"
STATIC = ROOT / "_build" / "static"
STAMP = COURSE / "staged.json"
NOTE_ID = "run-this-notebook"


def digest(paths: list[Path], *extra: str) -> str:
    """SHA-256 of files (names and contents, in sorted order) and extra strings."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    for text in extra:
        h.update(text.encode() + b"\0")
    return h.hexdigest()


def files(*folders: str, pattern: str = "*") -> list[Path]:
    """Every file under the given folders of the repository (caches left out)."""
    return [p for folder in folders for p in (ROOT / folder).rglob(pattern)
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts]


def wheel_name() -> str:
    """File name of the `dcv` wheel: the project's name in pyproject.toml, the version in dcv/__init__.py."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = re.search(r'^__version__ = "([^"]+)"', (ROOT / "dcv" / "__init__.py").read_text(), re.M)
    return f"{project['name']}-{version.group(1)}-py3-none-any.whl"


def repository() -> tuple[str, str]:
    """The course repository's URL and branch, as set in _config.yml (the one place they live)."""
    repo = yaml.safe_load((ROOT / "_config.yml").read_text()).get("repository", {})
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def note() -> str:
    """The "run this notebook" note put on every assignment page, below its title."""
    url, branch = repository()
    folder = url.rsplit("/", 1)[-1]
    wheel = wheel_name()
    return f"""\
> **Run this notebook yourself.** It needs Python 3.11, the course's packages and its helper
> package `dcv`.
>
> - *On your computer:* download this notebook (the download button at the top of its page in the
>   book), <a href="../_static/requirements.txt">requirements.txt</a> and
>   <a href="../_static/{wheel}">the <code>dcv</code> wheel</a> into one folder, then run
>   `pip install -r requirements.txt {wheel}` and `jupyter lab` there.
>   Or take the whole course: `git clone {url} && cd {folder} && bash scripts/setup.sh`,
>   then `.venv/bin/jupyter lab`.
> - *In Colab:* upload the notebook (*File → Upload notebook*) and run this in a new first cell:
>   `%pip install "dcv @ git+{url}@{branch}"`.
>
> Write your code where it says `YOUR CODE HERE`, run every cell, and press nbgrader's *Validate*
> (in JupyterLab with the course's packages) before you hand the notebook in.
"""


def with_note(path: Path) -> str:
    """A released notebook, as text, with the note inserted after its first (title) cell."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cell = nbformat.v4.new_markdown_cell(note())
    cell.id = NOTE_ID
    nb.cells.insert(1, cell)
    return nbformat.writes(nb) + "\n"


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write a file unless it already holds exactly this content (its time stamp is then kept)."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.write_bytes(data)
    return True


def load_stamp() -> dict:
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return {}


def up_to_date(stamp: dict, part: str, inputs: str, outputs: dict[str, Path]) -> bool:
    """Were these outputs made from these inputs, and are they still exactly as made?"""
    done = stamp.get(part, {})
    return (done.get("inputs") == inputs and done.get("outputs", {}).keys() == outputs.keys()
            and all(path.is_file() and digest([path]) == done["outputs"][name]
                    for name, path in outputs.items()))


def release() -> dict[str, Path] | None:
    """Release every assignment with nbgrader and stage its notebook, with the note, in assignments/."""
    cmd = [sys.executable, "-m", "autograder", "--course-dir", str(COURSE),
           "release", "--all", "--force", "--no-check"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        print("stage_assignments: releasing the assignments failed", file=sys.stderr)
        return None
    TARGET.mkdir(exist_ok=True)
    staged = {}
    for notebook in sorted((COURSE / "release").glob("*/*.ipynb")):
        target = TARGET / notebook.name
        changed = write_if_changed(target, with_note(notebook).encode())
        print(f"staged {notebook.parent.name} -> assignments/{notebook.name}"
              + ("" if changed else " (unchanged)"))
        staged[notebook.name] = target
    for stale in set(TARGET.glob("*")) - set(staged.values()):
        print(f"removed assignments/{stale.name}: no such assignment")
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return staged


def build_wheel() -> dict[str, Path] | None:
    """Build the `dcv` wheel (from a copy of the package, so no build folder lands in the tree)."""
    STATIC.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(ROOT / "pyproject.toml", tmp)
        shutil.copytree(ROOT / "dcv", Path(tmp) / "dcv", ignore=shutil.ignore_patterns("__pycache__"))
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
               "--no-index", "-w", str(Path(tmp) / "dist"), tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        built = Path(tmp) / "dist" / wheel_name()
        if proc.returncode or not built.is_file():
            print(proc.stdout + proc.stderr, file=sys.stderr)
            print("stage_assignments: building the dcv wheel failed", file=sys.stderr)
            return None
        for old in STATIC.glob("dcv-*.whl"):
            old.unlink()
        shutil.copy2(built, STATIC / built.name)
    write_if_changed(STATIC / "requirements.txt", (ROOT / "requirements.txt").read_bytes())
    print(f"built _build/static/{wheel_name()}, copied requirements.txt")
    return {"wheel": STATIC / wheel_name(), "requirements": STATIC / "requirements.txt"}


def main() -> int:
    """Stage the released assignments and the wheel, each only when its inputs changed."""
    stamp = load_stamp()
    parts = {
        "assignments": (release, digest(files("solutions", "autograder") + [Path(__file__)],
                                        note(), metadata.version("nbgrader")),
                        {p.name: p for p in TARGET.glob("*")} if TARGET.is_dir() else {}),
        "wheel": (build_wheel, digest(files("dcv", pattern="*.py") + [ROOT / "pyproject.toml",
                                      ROOT / "requirements.txt", Path(__file__)]),
                  {"wheel": STATIC / wheel_name(), "requirements": STATIC / "requirements.txt"}),
    }
    for part, (make, inputs, outputs) in parts.items():
        if up_to_date(stamp, part, inputs, outputs):
            print(f"stage_assignments: {part} up to date")
            continue
        stamp.pop(part, None)
        outputs = make()
        if outputs is None:
            return 1
        stamp[part] = {"inputs": inputs, "outputs": {n: digest([p]) for n, p in outputs.items()}}
        COURSE.mkdir(parents=True, exist_ok=True)
        STAMP.write_text(json.dumps(stamp, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
