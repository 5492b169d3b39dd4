"""scripts/cache.sh: the book's execution cache and Sphinx's doctrees, dropped when the helper package changes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("_build/.jupyter_cache/db", "_build/.chapters_cached/01_visual_cortex.md",
        "_build/.doctrees/environment.pickle")


def check(repo: Path) -> None:
    subprocess.run(["bash", "-c", f"source {ROOT / 'scripts' / 'cache.sh'} && book_cache_check"], cwd=repo, check=True)


def fill(repo: Path) -> None:
    for name in KEPT:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x")


def test_cache_and_doctrees_dropped_only_when_the_helper_package_changes(tmp_path):
    """Are the execution cache and the doctrees kept while dcv/ is unchanged, and all dropped when it changes?"""
    shutil.copy(ROOT / "requirements.txt", tmp_path)
    (tmp_path / "dcv").mkdir()
    (tmp_path / "dcv" / "data.py").write_text("A = 1\n")
    check(tmp_path)  # no key yet: a first reset writes it
    fill(tmp_path)
    check(tmp_path)
    assert all((tmp_path / name).exists() for name in KEPT), "unchanged sources: the cache must stay"
    (tmp_path / "dcv" / "data.py").write_text("A = 2\n")
    check(tmp_path)
    assert not [name for name in KEPT if (tmp_path / name).exists()], "dcv changed: cache and doctrees must go"
    fill(tmp_path)
    check(tmp_path)
    assert all((tmp_path / name).exists() for name in KEPT), "the new key was recorded"
