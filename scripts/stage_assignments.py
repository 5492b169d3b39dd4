"""Stage every released (student) assignment notebook into assignments/ for the book.

The book shows each assignment as the student receives it: nbgrader's release, with solutions
and hidden tests removed. Sources in solutions/ are never published.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "_build" / "course"
TARGET = ROOT / "assignments"


def main() -> int:
    """Release all assignments into a scratch course folder and copy the notebooks to assignments/."""
    cmd = [sys.executable, "-m", "autograder", "--course-dir", str(COURSE),
           "release", "--all", "--force", "--no-check"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        print("stage_assignments: releasing the assignments failed", file=sys.stderr)
        return 1
    shutil.rmtree(TARGET, ignore_errors=True)
    TARGET.mkdir()
    for notebook in sorted((COURSE / "release").glob("*/*.ipynb")):
        shutil.copy2(notebook, TARGET / notebook.name)
        print(f"staged {notebook.parent.name} -> assignments/{notebook.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
