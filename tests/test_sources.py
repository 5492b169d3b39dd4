"""Tests of dcv.sources: the one loader of verified data (cache, sources in order, checksum, atomic save)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from dcv.sources import SourceError, array_digest, atomic_write, fetch_verified

GOOD = b"the verified content"


def digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def load(path: Path, sources):
    """fetch_verified for bytes: read/write the file as is, check its SHA-256 against GOOD's."""
    return fetch_verified("the test file", path, sources, read=Path.read_bytes, digest=digest,
                          expected=digest(GOOD), write=lambda value, tmp: tmp.write_bytes(value))


def failing(message: str):
    def fetch() -> bytes:
        raise OSError(message)
    return fetch


def test_first_good_source_is_used_and_cached(tmp_path):
    """Is a wrong source skipped, the first right one used and saved, and the cache served next time?"""
    path = tmp_path / "cache" / "file.bin"
    calls = []
    sources = [("offline mirror", failing("no route to host")),
               ("altered copy", lambda: calls.append("altered") or b"tampered"),
               ("registry", lambda: calls.append("registry") or GOOD),
               ("never asked", lambda: calls.append("never") or GOOD)]
    assert load(path, sources) == (GOOD, "registry")
    assert calls == ["altered", "registry"] and path.read_bytes() == GOOD
    assert load(path, sources) == (GOOD, f"local cache {path}")
    assert calls == ["altered", "registry"]
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]  # no temporary file left


def test_broken_cache_is_removed_with_a_warning_and_refetched(tmp_path):
    """Is a cache whose content fails the checksum removed, said so, and replaced from a source?"""
    path = tmp_path / "file.bin"
    path.write_bytes(b"half a download")
    with pytest.warns(UserWarning, match="removing broken cache .*checksum mismatch"):
        assert load(path, [("registry", lambda: GOOD)]) == (GOOD, "registry")
    assert path.read_bytes() == GOOD


def test_every_source_failing_names_each_one(tmp_path):
    """When nothing serves the file, does the error name every source tried and why?"""
    with pytest.raises(SourceError) as info:
        load(tmp_path / "file.bin", [("official download", failing("timed out")), ("registry", lambda: b"x")])
    message = str(info.value)
    assert message.startswith("the test file is unavailable; sources tried:")
    for part in ("local cache", "not there", "official download: OSError: timed out", "registry: checksum mismatch"):
        assert part in message
    assert not (tmp_path / "file.bin").exists()


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    """Does a write that fails half-way leave the previous file untouched and no temporary file?"""
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def half(tmp: Path) -> None:
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]
    atomic_write(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o644


def test_array_digest_sees_dtype_shape_and_bytes():
    """Do arrays with the same bytes but another dtype or shape get another digest?"""
    a = np.arange(6, dtype=np.uint8)
    assert array_digest(a) == array_digest(a.copy())
    assert len({array_digest(a), array_digest(a.reshape(2, 3)), array_digest(a.astype(np.int8)),
                array_digest(a, a)}) == 4
