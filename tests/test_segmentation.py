"""Tests of dcv.segmentation: nuclei loader, transposed convolution output sizes, crops and metrics."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from dcv import segmentation as seg
from dcv.memory import conv_output_size
from dcv.sources import FetchError, array_digest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# --- output sizes -----------------------------------------------------------------------------------

def test_conv_transpose_output_size_examples():
    """Do the hand-derived sizes of a transposed convolution come out?"""
    assert seg.conv_transpose_output_size(7, 3, 2, "same") == 14
    assert seg.conv_transpose_output_size(7, 3, 2, "valid") == 15
    assert seg.conv_transpose_output_size(7, 1, 3, "valid") == 21       # kernel smaller than stride
    assert seg.conv_transpose_output_size(4, 3, 2, "same", 0) == 7      # undoes 7 -> 4
    assert seg.conv_transpose_output_size(4, 3, 2, "valid", 1) == 10
    assert seg.conv_transpose_output_size(4, 4, 2, "same", 0) == 6      # even kernel: (n - 1) * s


def test_conv_shrinks_the_transposed_conv_output_back():
    """With output_padding=None, does a conv with the same settings shrink the output back to n?"""
    for n, k, s, padding in itertools.product(range(1, 30), range(1, 6), (1, 2, 3, 4), ("valid", "same")):
        m = seg.conv_transpose_output_size(n, k, s, padding)
        assert conv_output_size(m, k, s, padding) == n, (n, k, s, padding)


def test_conv_transpose_undoes_a_same_conv_when_the_stride_divides_n():
    """Does a stride-s transposed conv bring a 'same' stride-s conv back to n exactly when s divides n?"""
    for n, k, s in itertools.product(range(2, 40), (1, 2, 3, 5), (1, 2, 4)):
        m = conv_output_size(n, k, s, "same")
        assert (seg.conv_transpose_output_size(m, k, s, "same") == n) == (n % s == 0), (n, k, s)


@pytest.mark.parametrize("kwargs", [dict(padding="full"), dict(output_padding=2), dict(output_padding=-1),
                                    dict(stride=0), dict(n=0)])
def test_conv_transpose_output_size_rejects_bad_arguments(kwargs):
    """Are an unknown padding, a size or stride of 0 and an output_padding outside [0, stride) refused?"""
    args = dict(n=5, kernel=3, stride=2, padding="same") | kwargs
    with pytest.raises(ValueError):
        seg.conv_transpose_output_size(**args)


def test_conv_transpose_output_size_matches_keras_static_shape():
    """Does the formula give Keras' static output shape of Conv2DTranspose over a grid of settings?"""
    keras = pytest.importorskip("keras")
    for h, k, s, padding in itertools.product((1, 2, 3, 5, 8), (1, 2, 3, 4, 5), (1, 2, 3), ("valid", "same")):
        w = 13 - h  # a different length on the other axis
        for op in (None, *range(s)):
            layer = keras.layers.Conv2DTranspose(1, k, strides=s, padding=padding, output_padding=op)
            expected = (seg.conv_transpose_output_size(h, k, s, padding, op),
                        seg.conv_transpose_output_size(w, k, s, padding, op))
            assert tuple(layer.compute_output_shape((1, h, w, 1))[1:3]) == expected, (h, w, k, s, padding, op)


def test_conv_transpose_output_size_matches_keras_run():
    """Does a real Conv2DTranspose produce the computed shape, on every setting the backend accepts?

    Even kernels with padding='same' and output_padding=0 get a static shape of (n - 1) * stride from
    Keras, but the TensorFlow backend refuses to run them: they must be the only refusals.
    """
    keras = pytest.importorskip("keras")
    refused = []
    for h, k, s, padding in itertools.product((2, 5), (1, 2, 3, 4), (1, 2, 3), ("valid", "same")):
        w = 11 - h
        x = np.zeros((1, h, w, 1), "float32")
        for op in (None, *range(s)):
            layer = keras.layers.Conv2DTranspose(1, k, strides=s, padding=padding, output_padding=op)
            expected = (seg.conv_transpose_output_size(h, k, s, padding, op),
                        seg.conv_transpose_output_size(w, k, s, padding, op))
            try:
                y = layer(x)
            except Exception:
                refused.append((k % 2, padding, op))
                continue
            assert tuple(y.shape[1:3]) == expected, (h, w, k, s, padding, op)
    assert refused and set(refused) == {(0, "same", 0)}


# --- crops and metrics ------------------------------------------------------------------------------

def test_random_crops_shapes_and_pairing():
    """Are crops of the right size, drawn inside the image, and the mask transformed like the image?"""
    image = np.arange(20 * 30).reshape(20, 30)
    X, Y = seg.random_crops(image, image * 2, 8, 50, np.random.default_rng(0))
    assert X.shape == Y.shape == (50, 8, 8)
    np.testing.assert_array_equal(Y, X * 2)
    assert set(np.unique(X)) <= set(image.ravel())


def test_random_crops_are_reproducible():
    """Does the same generator seed give the same crops?"""
    image = np.random.default_rng(1).random((32, 32))
    a = seg.random_crops(image, image, 16, 5, np.random.default_rng(7))
    b = seg.random_crops(image, image, 16, 5, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])


def test_random_crops_rejects_large_crops():
    """Is a crop larger than the image refused?"""
    with pytest.raises(ValueError):
        seg.random_crops(np.zeros((10, 20)), np.zeros((10, 20)), 11, 1, np.random.default_rng(0))


def test_metrics_on_a_small_example():
    """Do accuracy, IoU and Dice give the values worked out by hand?"""
    y_true = np.array([[1, 1, 0, 0], [1, 1, 0, 0]])
    y_pred = np.array([[1, 0, 0, 0], [1, 1, 1, 0]])
    assert seg.pixel_accuracy(y_true, y_pred) == 6 / 8
    assert seg.foreground_iou(y_true, y_pred) == 3 / 5
    assert seg.dice_coefficient(y_true, y_pred) == 2 * 3 / (4 + 4)


def test_metrics_edge_cases():
    """Is predicting all background worth IoU 0 on an image with foreground, and are empty masks a match?"""
    y_true = np.zeros((4, 4), bool)
    y_true[0, 0] = True
    empty = np.zeros_like(y_true)
    assert seg.foreground_iou(y_true, empty) == 0.0
    assert seg.dice_coefficient(y_true, empty) == 0.0
    assert seg.pixel_accuracy(y_true, empty) == 15 / 16
    assert seg.foreground_iou(empty, empty) == seg.dice_coefficient(empty, empty) == 1.0


# --- the nuclei image -------------------------------------------------------------------------------

def test_load_nuclei_facts():
    """Is the nuclei image 512×512 with 125 labelled nuclei, identical from the wheel and the cache?"""
    try:
        image, labels = seg.load_nuclei()
    except seg.NucleiUnavailableError as exc:
        pytest.skip(str(exc))
    assert image.shape == labels.shape == (512, 512)
    assert image.dtype == labels.dtype == np.uint16
    assert len(np.unique(labels)) - 1 == 125
    assert array_digest(image, labels) == seg.NUCLEI_SHA256
    again = seg.load_nuclei()  # second call: from the cache
    np.testing.assert_array_equal(again[1], labels)


def test_load_nuclei_reports_every_source(tmp_path, monkeypatch):
    """When the cache is corrupt and the wheel cannot be downloaded, does the error name both sources?"""
    monkeypatch.setenv("DCV_CACHE_DIR", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    np.savez(tmp_path / "datasets" / "nuclei2d.npz", image=np.zeros(1), labels=np.zeros(1))

    def no_wheel(requirement: str) -> None:
        raise FetchError(f"pip download {requirement} failed: offline")

    monkeypatch.setattr(seg, "pip_download", no_wheel)
    with pytest.raises(seg.NucleiUnavailableError, match=r"(?s)checksum mismatch.*stardist==0.9.2.*offline"):
        seg.load_nuclei()
