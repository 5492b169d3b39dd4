"""Unit tests of dcv.images: class folders of PNG files, and the flower photos' loader (no network)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from dcv import images


def make_archive(path: Path, members: dict[str, bytes]) -> str:
    """Write a .tgz holding the given files; return its SHA-256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


FLOWER_FILES = {f"flower_photos/{name}/{i}.jpg": f"{name} {i}".encode()
                for name in images.FLOWERS_CLASSES for i in range(2)}
FLOWER_FILES["flower_photos/LICENSE.txt"] = b"CC-BY"


def test_write_class_folders_round_trip(tmp_path):
    """Are the images written losslessly as PNG files, in one folder per class, as Keras reads them?"""
    import keras

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (7, 5, 6), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2, 2])
    root = images.write_class_folders(X, y, ["b", "a", "c"], tmp_path / "set")
    assert images.class_counts(root) == {"a": 2, "b": 2, "c": 3}
    assert sorted(p.name for p in (root / "c").iterdir()) == ["c_2.png", "c_5.png", "c_6.png"]
    import tensorflow as tf

    back = tf.io.decode_png((root / "a" / "a_4.png").read_bytes()).numpy()
    assert back.shape == (5, 6, 1) and np.array_equal(back[..., 0], X[4])
    dataset = keras.utils.image_dataset_from_directory(root, image_size=(5, 6), batch_size=None,
                                                       shuffle=False, color_mode="grayscale", verbose=False)
    got = {(int(label), image.numpy().astype(np.uint8).tobytes()) for image, label in dataset}
    # Keras numbers the classes in alphabetical order of their folders: a=0, b=1, c=2
    renumbered = np.array([1, 0, 2])[y]
    assert got == {(int(label), image[..., None].tobytes()) for image, label in zip(X, renumbered)}


def test_write_class_folders_rgb(tmp_path):
    """Are RGB images written with their 3 channels?"""
    import tensorflow as tf

    X = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    root = images.write_class_folders(X, [1, 1], ["x", "y"], tmp_path)
    assert images.class_counts(root) == {"x": 0, "y": 2}
    assert np.array_equal(tf.io.decode_png((root / "y" / "y_1.png").read_bytes()).numpy(), X[1])


@pytest.mark.parametrize("X, y, names, message", [
    (np.zeros((2, 4, 4), np.float32), [0, 1], ["a", "b"], "images must be uint8"),
    (np.zeros((2, 4, 4, 2), np.uint8), [0, 1], ["a", "b"], "images must be uint8"),
    (np.zeros((2, 4, 4), np.uint8), [0], ["a", "b"], "labels must be 2 integers"),
    (np.zeros((2, 4, 4), np.uint8), [0, 2], ["a", "b"], "labels must lie in 0..1"),
    (np.zeros((2, 4, 4), np.uint8), [0, 1], ["a", "a"], "distinct folder names"),
    (np.zeros((2, 4, 4), np.uint8), [0, 1], ["a", "../b"], "distinct folder names"),
])
def test_write_class_folders_refuses_bad_input(tmp_path, X, y, names, message):
    """Does bad input get a one-line ValueError that says what is wrong, and write nothing?"""
    with pytest.raises(ValueError, match=message):
        images.write_class_folders(X, y, names, tmp_path / "set")
    assert not (tmp_path / "set").exists()


def test_write_class_folders_never_overwrites(tmp_path):
    """Is a folder that already holds files refused, so that no earlier dataset is mixed in or lost?"""
    (tmp_path / "old.txt").write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        images.write_class_folders(np.zeros((1, 2, 2), np.uint8), [0], ["a"], tmp_path)
    assert (tmp_path / "old.txt").read_text() == "keep"


def test_fetch_flowers_downloads_verifies_and_unpacks_once(tmp_path):
    """Does the loader download the archive, check its SHA-256, unpack it, then reuse it offline?"""
    archive = tmp_path / "served.tgz"
    digest = make_archive(archive, FLOWER_FILES)
    folder = images.fetch_flowers(tmp_path / "cache", url=archive.as_uri(), sha256=digest)
    assert folder == tmp_path / "cache" / "flower_photos"
    assert images.class_counts(folder) == dict.fromkeys(images.FLOWERS_CLASSES, 2)
    assert (folder / "roses" / "1.jpg").read_bytes() == b"roses 1"
    archive.unlink()  # the source is gone: the unpacked copy is used
    assert images.fetch_flowers(tmp_path / "cache", url=archive.as_uri(), sha256=digest) == folder


def test_fetch_flowers_refuses_a_wrong_checksum(tmp_path):
    """Is an archive whose SHA-256 differs refused, deleted, and never unpacked?"""
    archive = tmp_path / "served.tgz"
    make_archive(archive, FLOWER_FILES)
    with pytest.raises(images.FlowersUnavailableError, match="SHA-256 .* differs"):
        images.fetch_flowers(tmp_path / "cache", url=archive.as_uri(), sha256="0" * 64)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == []


def test_fetch_flowers_offline_is_one_clear_error(tmp_path):
    """Does an unreachable source give one line naming the URL and the alternatives, no traceback chain?"""
    url = (tmp_path / "nowhere.tgz").as_uri()
    with pytest.raises(images.FlowersUnavailableError) as info:
        images.fetch_flowers(tmp_path / "cache", url=url, sha256="0" * 64, timeout=1)
    message = str(info.value)
    assert url in message and "own photos" in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_fetch_flowers_replaces_a_corrupted_download(tmp_path):
    """Is a cached archive that fails its checksum downloaded again?"""
    archive = tmp_path / "served.tgz"
    digest = make_archive(archive, FLOWER_FILES)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "flower_photos.tgz").write_bytes(b"truncated")
    folder = images.fetch_flowers(tmp_path / "cache", url=archive.as_uri(), sha256=digest)
    assert images.class_counts(folder)["daisy"] == 2


@pytest.mark.parametrize("name", ["../evil.txt", "flower_photos/../../evil.txt", "other/daisy/1.jpg"])
def test_fetch_flowers_refuses_members_outside_its_folder(tmp_path, name):
    """Is an archive with a member outside flower_photos/ refused, writing nothing outside the cache?"""
    archive = tmp_path / "served.tgz"
    digest = make_archive(archive, {**FLOWER_FILES, name: b"x"})
    with pytest.raises(images.FlowersUnavailableError):
        images.fetch_flowers(tmp_path / "cache", url=archive.as_uri(), sha256=digest)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "cache" / "flower_photos").exists()


def test_fetch_flowers_checks_the_classes(tmp_path):
    """Is an archive that lacks a class folder refused?"""
    archive = tmp_path / "served.tgz"
    digest = make_archive(archive, {k: v for k, v in FLOWER_FILES.items() if "/tulips/" not in k})
    with pytest.raises(images.FlowersUnavailableError, match="tulips"):
        images.fetch_flowers(tmp_path / "cache", url=archive.as_uri(), sha256=digest)


def test_class_counts_refuses_a_missing_folder(tmp_path):
    """Does counting a folder that does not exist give a clear ValueError?"""
    with pytest.raises(ValueError, match="is not a folder"):
        images.class_counts(tmp_path / "missing")
