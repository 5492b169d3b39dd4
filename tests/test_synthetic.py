"""Unit tests of dcv.synthetic, on small hand-made "digits" (no download needed)."""

import numpy as np
import pytest

from dcv import detection, synthetic


def fake_digits(n: int = 20, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images, each with a random filled rectangle of ink, and labels 0..9."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), dtype=np.uint8)
    for img in images:
        y0, x0 = rng.integers(2, 10, size=2)
        y1, x1 = rng.integers(16, size - 2, size=2)
        img[y0:y1, x0:x1] = rng.integers(1, 256, size=(y1 - y0, x1 - x0))
    return images, np.arange(n) % 10


def test_tight_box_hand_example():
    """Does tight_box put the corners on the edges of the ink's first and last rows and columns?"""
    image = np.zeros((10, 12))
    image[2:5, 3:9] = 1
    assert synthetic.tight_box(image).tolist() == [3, 2, 9, 5]
    with pytest.raises(ValueError):
        synthetic.tight_box(np.zeros((4, 4)))


@pytest.mark.parametrize("scale_range", [(1.0, 1.0), (0.7, 1.8)])
def test_digits_on_canvas_shapes_and_tight_boxes(scale_range):
    """Are the canvases, labels and boxes well shaped, and is each box tight around the ink?"""
    images, labels = fake_digits()
    X, y, boxes = synthetic.digits_on_canvas(images, labels, 64, n=50, scale_range=scale_range,
                                             seed=3)
    assert X.shape == (50, 64, 64) and X.dtype == np.uint8
    assert y.shape == (50,) and boxes.shape == (50, 4) and boxes.dtype == np.float32
    for canvas, box in zip(X, boxes):
        x0, y0, x1, y1 = box.astype(int)
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert canvas[y0:y1, x0:x1].sum() == canvas.sum()  # all ink inside
        inside = canvas[y0:y1, x0:x1]
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_digits_on_canvas_keeps_the_unscaled_digit_and_label():
    """At scale 1, is the digit pasted unchanged and its label carried along?"""
    images, labels = fake_digits()
    X, y, boxes = synthetic.digits_on_canvas(images, labels, 40, n=10, seed=1)
    for canvas, label, box in zip(X, y, boxes):
        crop = canvas[int(box[1]):int(box[3]), int(box[0]):int(box[2])]
        sources = [img for img, lab in zip(images, labels) if lab == label]
        ref = [img[int(b[1]):int(b[3]), int(b[0]):int(b[2])]
               for img, b in ((s, synthetic.tight_box(s)) for s in sources)]
        assert any(r.shape == crop.shape and (r == crop).all() for r in ref)


def test_digits_on_canvas_is_deterministic_and_varies_with_seed():
    """Does the same seed give the same data set, and another seed a different one?"""
    images, labels = fake_digits()
    a = synthetic.digits_on_canvas(images, labels, 48, n=20, scale_range=(0.8, 1.2), seed=7)
    b = synthetic.digits_on_canvas(images, labels, 48, n=20, scale_range=(0.8, 1.2), seed=7)
    c = synthetic.digits_on_canvas(images, labels, 48, n=20, scale_range=(0.8, 1.2), seed=8)
    assert all((u == v).all() for u, v in zip(a, b))
    assert not (a[0] == c[0]).all()


def test_digits_on_canvas_rejects_digits_too_big():
    """Is a scale that makes the digit larger than the canvas refused?"""
    images, labels = fake_digits()
    with pytest.raises(ValueError):
        synthetic.digits_on_canvas(images, labels, 30, n=5, scale_range=(1.5, 1.5))


def test_digits_scene_frames_disjoint_and_boxes_tight():
    """In a scene, are the digits' frames disjoint and each box tight around its digit's ink?"""
    images, labels = fake_digits()
    X, labs, boxes, origins = synthetic.digits_scene(images, labels, 100, n=30, n_digits=(2, 5),
                                                     seed=0)
    assert X.shape == (30, 100, 100) and len(labs) == len(boxes) == len(origins) == 30
    counts = [len(lab) for lab in labs]
    assert min(counts) >= 2 and max(counts) <= 5
    for canvas, lab, box, org in zip(X, labs, boxes, origins):
        assert box.shape == (len(lab), 4) and org.shape == (len(lab), 2)
        frames = np.concatenate([org, org + 28], axis=1)
        overlap = detection.pairwise_iou(frames, frames) - np.eye(len(frames))
        assert (overlap == 0).all()
        for b, (x, y) in zip(box.astype(int), org):
            assert x <= b[0] < b[2] <= x + 28 and y <= b[1] < b[3] <= y + 28
            assert synthetic.tight_box(canvas[b[1]:b[3], b[0]:b[2]]).tolist() == [
                0, 0, b[2] - b[0], b[3] - b[1]]
        ink = sum(canvas[b[1]:b[3], b[0]:b[2]].astype(int).sum() for b in box.astype(int))
        assert ink == canvas.astype(int).sum()


def test_digits_scene_is_deterministic():
    """Does the same seed give the same scenes?"""
    images, labels = fake_digits()
    a = synthetic.digits_scene(images, labels, 84, n=5, seed=2)
    b = synthetic.digits_scene(images, labels, 84, n=5, seed=2)
    assert (a[0] == b[0]).all()
    assert all((u == v).all() for u, v in zip(a[2], b[2]))


def test_scene_windows_labels_and_boxes():
    """Is each window a crop of a scene, labelled with a digit only near that digit's frame?"""
    images, labels = fake_digits()
    scenes = synthetic.digits_scene(images, labels, 84, n=20, n_digits=(1, 4), seed=0)
    X, y, boxes = synthetic.scene_windows(*scenes, n=400, max_shift=2, seed=1)
    assert X.shape == (400, 28, 28) and y.shape == (400,) and boxes.shape == (400, 4)
    positive = y != 10
    assert 0.4 < positive.mean() < 0.6
    assert (boxes[~positive] == 0).all()
    assert ((boxes[positive] >= 0) & (boxes[positive] <= 28)).all()
    assert (boxes[positive, 2] > boxes[positive, 0]).all()
    for window, label, box in zip(X[positive], y[positive], boxes[positive]):
        x0, y0, x1, y1 = box.astype(int)
        assert window[y0:y1, x0:x1].any() and label in labels


def test_scene_windows_positions():
    """Do positive windows lie within max_shift of a frame, and background ones farther from all?"""
    images, labels = fake_digits()
    scenes = synthetic.digits_scene(images, labels, 84, n=10, n_digits=(1, 3), seed=2)
    X_scenes, _, _, origins = scenes
    X, y, _ = synthetic.scene_windows(*scenes, n=200, max_shift=3, seed=3)
    # every place each possible window content occurs, to find where a window was cut
    spots: dict[bytes, list[tuple[int, int, int]]] = {}
    views = np.lib.stride_tricks.sliding_window_view(X_scenes, (28, 28), axis=(1, 2))
    for (i, r, c) in np.ndindex(views.shape[:3]):
        spots.setdefault(views[i, r, c].tobytes(), []).append((i, r, c))
    checked = 0
    for window, label in zip(X, y):
        places = spots[window.tobytes()]  # KeyError if the window is not a crop of a scene
        if len(places) != 1:  # empty or ambiguous windows: their place is unknown
            continue
        i, r, c = places[0]
        distance = min(max(abs(c - fx), abs(r - fy)) for fx, fy in origins[i])
        assert (distance <= 3) == (label != 10)
        checked += 1
    assert checked > 50


def test_scene_windows_is_deterministic():
    """Does the same seed give the same windows?"""
    images, labels = fake_digits()
    scenes = synthetic.digits_scene(images, labels, 84, n=5, seed=2)
    a = synthetic.scene_windows(*scenes, n=50, seed=4)
    b = synthetic.scene_windows(*scenes, n=50, seed=4)
    assert all((u == v).all() for u, v in zip(a, b))
