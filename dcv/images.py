"""Image datasets as files, one folder per class: what ``keras.utils.image_dataset_from_directory`` reads.

- ``write_class_folders(images, labels, class_names, root)`` writes arrays as PNG files into
  ``root/<class name>/``: the offline stand-in for a folder of photos (e.g. Fashion-MNIST images).
- ``fetch_flowers()`` returns the folder of TensorFlow's flower photos (3,670 JPEGs, 5 classes:
  daisy, dandelion, roses, sunflowers, tulips), downloaded once from its official URL, checked against
  its SHA-256 (the checksum TensorFlow Datasets records for ``tf_flowers``) and unpacked safely into
  ``$DCV_CACHE_DIR/datasets/flower_photos``. Machines without internet get one clear error.
- ``class_counts(root)`` counts the image files of each class folder.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dcv.sources import cache_dir
from dcv.sources import file_digest as _sha256

__all__ = ["write_class_folders", "fetch_flowers", "class_counts", "FlowersUnavailableError",
           "FLOWERS_URL", "FLOWERS_SHA256", "FLOWERS_CLASSES", "IMAGE_SUFFIXES"]

FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
# From tensorflow/datasets, tensorflow_datasets/url_checksums/tf_flowers.txt (228,813,984 bytes).
FLOWERS_SHA256 = "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c"
FLOWERS_CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what image_dataset_from_directory reads
_MARKER = ".complete"  # written last into an unpacked folder: holds the archive's SHA-256


class FlowersUnavailableError(RuntimeError):
    """The flower photos could not be downloaded, verified or unpacked (the message says why)."""


def write_class_folders(images: np.ndarray, labels: Sequence[int], class_names: Sequence[str],
                        root: str | os.PathLike[str]) -> Path:
    """Write uint8 images (n, h, w) or (n, h, w, 1|3) as PNG files in root/<class name>/; return root."""
    import tensorflow as tf

    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (
            images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise ValueError(f"images must be uint8 of shape (n, h, w) or (n, h, w, 1 or 3), "
                         f"not {images.dtype} {images.shape}")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {len(images)} integers, not {labels.dtype} {labels.shape}")
    names = [str(name) for name in class_names]
    bad = [n for n in names if not n or n in (".", "..") or "/" in n or "\\" in n or n.startswith(".")]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct folder names, not {names!r}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"labels must lie in 0..{len(names) - 1}, not {labels.min()}..{labels.max()}")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty: write the images into a new folder")
    if images.ndim == 3:
        images = images[..., np.newaxis]
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    width = len(str(max(len(images) - 1, 0)))
    for i, (image, label) in enumerate(zip(images, labels)):
        png = tf.io.encode_png(image).numpy()
        (root / names[label] / f"{names[label]}_{i:0{width}d}.png").write_bytes(png)
    return root


def class_counts(root: str | os.PathLike[str]) -> dict[str, int]:
    """Number of image files (by suffix) in each class folder of root, in alphabetical order."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    return {folder.name: sum(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())
            for folder in sorted(root.iterdir()) if folder.is_dir() and not folder.name.startswith(".")}


def _download(url: str, dest: Path, timeout: float) -> None:
    """Download url into the file dest (written whole, then renamed into place)."""
    fd, tmp = tempfile.mkstemp(suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unpack(archive: Path, folder: Path, top: str) -> Path:
    """Unpack the tar archive's members under top/ into folder (no links, no paths outside it)."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp, tarfile.open(archive) as tar:
        members = tar.getmembers()
        outside = [m.name for m in members if not (m.name == top or m.name.startswith(top + "/"))]
        if outside:
            raise FlowersUnavailableError(f"{archive.name}: unexpected member {outside[0]!r} outside {top}/")
        tar.extractall(tmp, members=members, filter="data")  # refuses absolute paths, '..' and devices
        target = folder / top
        shutil.rmtree(target, ignore_errors=True)
        os.replace(Path(tmp) / top, target)
    return target


def fetch_flowers(dest: str | os.PathLike[str] | None = None, url: str = FLOWERS_URL,
                  sha256: str = FLOWERS_SHA256, classes: Sequence[str] = FLOWERS_CLASSES,
                  timeout: float | None = None) -> Path:
    """Folder of TF's flower photos (one subfolder per class): download, verify and unpack it once."""
    folder = Path(dest) if dest is not None else cache_dir("datasets")
    folder.mkdir(parents=True, exist_ok=True)
    target, archive = folder / "flower_photos", folder / "flower_photos.tgz"
    marker = target / _MARKER
    if marker.is_file() and marker.read_text().strip() == sha256:
        return target
    if timeout is None:
        timeout = float(os.environ.get("DCV_DOWNLOAD_TIMEOUT", "60"))
    if archive.is_file() and _sha256(archive) != sha256:
        archive.unlink()  # a broken or foreign file: download it again
    if not archive.is_file():
        try:
            _download(url, archive, timeout)
        except Exception as exc:  # noqa: BLE001 - offline, timeout, HTTP error: one clear message
            raise FlowersUnavailableError(
                f"could not download the flower photos from {url} ({type(exc).__name__}: {exc}); "
                "offline, use your own photos or the Fashion-MNIST folders") from None
        if (digest := _sha256(archive)) != sha256:
            archive.unlink()
            raise FlowersUnavailableError(f"{url}: SHA-256 {digest} differs from the expected {sha256}")
    try:
        _unpack(archive, folder, "flower_photos")
    except (tarfile.TarError, OSError) as exc:
        raise FlowersUnavailableError(f"could not unpack {archive}: {type(exc).__name__}: {exc}") from None
    missing = [name for name in classes if not (target / name).is_dir()]
    if missing:
        raise FlowersUnavailableError(f"{archive.name} has no folder for the classes {missing}")
    marker.write_text(sha256 + "\n")
    return target
