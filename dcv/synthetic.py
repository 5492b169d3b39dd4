"""Data sets the course generates: small digit images placed on larger canvases, with their boxes.

Boxes follow :mod:`dcv.detection`: ``(x_min, y_min, x_max, y_max)`` in pixels of the canvas,
corners on pixel edges (a digit whose ink covers columns 10..19 has ``x_min = 10``, ``x_max = 20``).
Every box is *tight*: computed from the nonzero pixels of the digit as it lies on the canvas.
All generators are deterministic for a given ``seed``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["tight_box", "digits_on_canvas", "digits_scene", "scene_windows"]


def tight_box(image: np.ndarray, threshold: float = 0) -> np.ndarray:
    """Box ``(x_min, y_min, x_max, y_max)`` around the pixels of a 2-D image above ``threshold``."""
    mask = np.asarray(image) > threshold
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        raise ValueError("the image has no pixel above the threshold")
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize a uint8 image by ``scale``, bilinear (anti-aliased when shrinking)."""
    if scale == 1:
        return image
    from skimage.transform import resize

    size = tuple(max(1, int(round(s * scale))) for s in image.shape)
    out = resize(image, size, order=1, preserve_range=True, anti_aliasing=scale < 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _check(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return the source digits (uint8, shape (N, h, w)) and their labels."""
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, h, w), got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return images, labels


def digits_on_canvas(images: np.ndarray, labels: np.ndarray, canvas_size: int = 56, n: int = 1000,
                     scale_range: tuple[float, float] = (1.0, 1.0), seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` canvases, each with one random digit at a random place and scale: X, y and boxes.

    Returns ``X`` (uint8, ``(n, canvas_size, canvas_size)``), ``y`` (labels, ``(n,)``) and ``boxes``
    (float32, ``(n, 4)``, tight, in pixels). Digits are drawn with replacement from ``images``; the
    scale is uniform in ``scale_range`` and the scaled digit always fits entirely on the canvas.
    """
    images, labels = _check(images, labels)
    rng = np.random.default_rng(seed)
    X = np.zeros((n, canvas_size, canvas_size), dtype=np.uint8)
    boxes = np.zeros((n, 4), dtype=np.float32)
    picks = rng.integers(len(images), size=n)
    scales = rng.uniform(*scale_range, size=n)
    for i, (k, scale) in enumerate(zip(picks, scales)):
        digit = _rescale(images[k], float(scale))
        h, w = digit.shape
        if h > canvas_size or w > canvas_size:
            raise ValueError(f"a digit scaled to {h}x{w} does not fit a {canvas_size}-pixel canvas")
        top, left = rng.integers(canvas_size - h + 1), rng.integers(canvas_size - w + 1)
        X[i, top:top + h, left:left + w] = digit
        boxes[i] = tight_box(X[i])
    return X, labels[picks].copy(), boxes


def digits_scene(images: np.ndarray, labels: np.ndarray, canvas_size: int = 100, n: int = 100,
                 n_digits: tuple[int, int] = (1, 4), seed: int = 0, max_tries: int = 100
                 ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """``n`` canvases with several unscaled digits whose source frames never overlap.

    Each canvas gets between ``n_digits[0]`` and ``n_digits[1]`` digits (inclusive), placed at
    random so that their ``h x w`` source frames (28x28 for MNIST) are disjoint. Returns ``X``
    (uint8, ``(n, canvas_size, canvas_size)``) and, per canvas, the ``labels`` (int, ``(k,)``),
    the tight ``boxes`` (float32, ``(k, 4)``) and the top-left ``origins`` ``(x, y)`` of the
    frames (int, ``(k, 2)``). A digit that finds no free place after ``max_tries`` is left out.
    """
    images, labels = _check(images, labels)
    rng = np.random.default_rng(seed)
    h, w = images.shape[1:]
    X = np.zeros((n, canvas_size, canvas_size), dtype=np.uint8)
    all_labels, all_boxes, all_origins = [], [], []
    for i in range(n):
        frames: list[tuple[int, int]] = []
        lab, box = [], []
        for _ in range(rng.integers(n_digits[0], n_digits[1] + 1)):
            for _ in range(max_tries):
                x, y = (int(v) for v in rng.integers(0, [canvas_size - w + 1, canvas_size - h + 1]))
                if all(abs(x - fx) >= w or abs(y - fy) >= h for fx, fy in frames):
                    break
            else:
                continue
            k = rng.integers(len(images))
            X[i, y:y + h, x:x + w] = images[k]
            box.append(tight_box(images[k]) + np.array([x, y, x, y], dtype=np.float32))
            lab.append(labels[k])
            frames.append((x, y))
        all_labels.append(np.asarray(lab, dtype=np.int64))
        all_boxes.append(np.asarray(box, dtype=np.float32).reshape(-1, 4))
        all_origins.append(np.asarray(frames, dtype=np.int64).reshape(-1, 2))
    return X, all_labels, all_boxes, all_origins


def scene_windows(X: np.ndarray, labels: list[np.ndarray], boxes: list[np.ndarray],
                  origins: list[np.ndarray], n: int, window: int = 28, max_shift: int = 2,
                  positive_fraction: float = 0.5, background_label: int = 10, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` square windows cut out of scenes (see :func:`digits_scene`), labelled for detection.

    A window is *positive* when it lies within ``max_shift`` pixels (in x and in y) of a digit's
    frame: its label is the digit's and its box the digit's tight box in window pixels, clipped to
    the window. Any other window is *background*: label ``background_label``, box all zeros.
    About ``positive_fraction`` of the windows are positive. Returns windows (uint8,
    ``(n, window, window)``), labels (int, ``(n,)``) and boxes (float32, ``(n, 4)``).
    """
    rng = np.random.default_rng(seed)
    size = X.shape[1]
    if X.shape[2] != size or window > size:
        raise ValueError(f"scenes must be square and at least {window} pixels, got {X.shape[1:]}")
    last = size - window  # largest window origin
    out = np.zeros((n, window, window), dtype=np.uint8)
    out_labels = np.full(n, background_label, dtype=np.int64)
    out_boxes = np.zeros((n, 4), dtype=np.float32)
    with_digits = [i for i in range(len(X)) if len(labels[i])]
    for k in range(n):
        if rng.random() < positive_fraction and with_digits:
            i = with_digits[rng.integers(len(with_digits))]
            d = rng.integers(len(labels[i]))
            x, y = np.clip(origins[i][d] + rng.integers(-max_shift, max_shift + 1, size=2), 0, last)
            out_labels[k] = labels[i][d]
            box = boxes[i][d] - np.array([x, y, x, y], dtype=np.float32)
            out_boxes[k] = np.clip(box, 0, window)
        else:
            i = rng.integers(len(X))
            while True:  # rejection: a background window is far (> max_shift) from every frame
                x, y = rng.integers(0, last + 1, size=2)
                if all(max(abs(x - fx), abs(y - fy)) > max_shift for fx, fy in origins[i]):
                    break
        out[k] = X[i, y:y + window, x:x + window]
    return out, out_labels, out_boxes
