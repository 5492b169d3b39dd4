"""Tests of dcv.memory: output sizes and parameters against Keras, bytes on hand-checkable cases."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import itertools

import keras
import numpy as np
import pytest

from dcv.memory import (
    ConvSpec,
    conv2d_params,
    conv_output_size,
    conv_stack_report,
    format_bytes,
    max_batch_size,
    same_padding,
)

SIZES = [(1, 2), (3, 4), (5, 7), (8, 9), (10, 13), (16, 11)]


def _keras_conv(kernel, stride, padding, filters=1):
    """A built Conv2D layer on one input channel."""
    layer = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding)
    layer.build((None, None, None, 1))
    return layer


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_output_size_matches_keras(padding):
    """Does conv_output_size give Keras' output height and width over a grid of configurations?"""
    checked = 0
    for kernel, stride in itertools.product([1, 2, 3, 5], [1, 2, 3]):
        layer = _keras_conv(kernel, stride, padding)
        for h, w in SIZES:
            if padding == "valid" and kernel > min(h, w):
                continue
            out = layer(np.zeros((1, h, w, 1), dtype="float32"))
            expected = (conv_output_size(h, kernel, stride, padding),
                        conv_output_size(w, kernel, stride, padding))
            assert tuple(out.shape[1:3]) == expected, (h, w, kernel, stride, padding)
            checked += 1
    assert checked > 40


def test_same_padding_matches_keras():
    """Is Keras' 'same' convolution a 'valid' one on the input zero-padded by same_padding?"""
    rng = np.random.default_rng(0)
    for (h, w), kernel, stride in itertools.product([(5, 8), (7, 6)], [2, 3, 4], [1, 2, 3]):
        x = rng.normal(size=(1, h, w, 1)).astype("float32")
        same, valid = _keras_conv(kernel, stride, "same"), _keras_conv(kernel, stride, "valid")
        valid.set_weights(same.get_weights())
        padded = np.pad(x, ((0, 0), same_padding(h, kernel, stride), same_padding(w, kernel, stride), (0, 0)))
        np.testing.assert_allclose(valid(padded), same(x), atol=1e-5, err_msg=f"{h, w, kernel, stride}")


def test_same_padding_values():
    """Does 'same' padding put the odd extra zero after (bottom/right), as TensorFlow does?"""
    assert same_padding(5, 3) == (1, 1)
    assert same_padding(6, 4) == (1, 2)
    assert same_padding(5, 3, stride=2) == (1, 1)
    assert same_padding(6, 1, stride=2) == (0, 0)


def test_params_match_keras_model():
    """Do conv2d_params and the report's total equal count_params() of a real Keras model?"""
    specs = [ConvSpec(8, 5, 2, "same"), ConvSpec(16, (3, 1), 1, "valid"),
             ConvSpec(4, 3, (2, 1), "same", use_bias=False)]
    model = keras.Sequential([keras.Input((21, 17, 3))] + [
        keras.layers.Conv2D(s.filters, s.kernel, strides=s.stride, padding=s.padding, use_bias=s.use_bias)
        for s in specs])
    report = conv_stack_report((21, 17, 3), [ConvSpec.from_keras(layer) for layer in model.layers])
    for layer, row in zip(model.layers, report.rows):
        assert row.params == layer.count_params()
        assert row.output_shape == tuple(layer.output.shape[1:])
    assert report.total_params == model.count_params()
    assert conv2d_params(5, 5, 3, 8) == (5 * 5 * 3 + 1) * 8 == model.layers[0].count_params()


def test_bytes_tiny_case():
    """Are the inference and training bytes right on a case small enough to check by hand?"""
    # input 4x4x1 (16 values); conv1: 2 filters 3x3 same -> 4x4x2 (32); conv2: 1 filter 3x3 valid -> 2x2x1 (4)
    report = conv_stack_report((4, 4, 1), [ConvSpec(2, 3, 1, "same"), ConvSpec(1, 3, 1, "valid")],
                               dtype_bytes=4, batch_size=10)
    assert [r.output_shape for r in report.rows] == [(4, 4, 2), (2, 2, 1)]
    assert [r.params for r in report.rows] == [(9 + 1) * 2, (9 * 2 + 1) * 1]  # 20, 19
    assert report.param_bytes == 39 * 4
    assert report.tensor_bytes == (64, 128, 16)
    assert report.inference_peak == 0  # input + conv1 (192) beats conv1 + conv2 (144)
    assert report.inference_bytes == 156 + 64 + 128
    assert report.training_bytes == 10 * (128 + 16) + 10 * 64 + 156
    assert report.training_bytes_for(1) == 64 + 128 + 16 + 156
    assert max_batch_size(report, report.training_bytes) == 10
    assert max_batch_size(report, report.training_bytes - 1) == 9
    assert max_batch_size(report, 100) == 0


def test_same_rounds_up():
    """Does 'same' padding round an odd size up (7 / 2 -> 4), and 'valid' round down?"""
    assert conv_output_size(7, 3, 2, "same") == 4
    assert conv_output_size(7, 2, 2, "valid") == 3
    assert conv_output_size(7, 3, 2, "VALID") == 3


@pytest.mark.parametrize("args, match", [
    ((3, 5, 1, "valid"), "larger than the input"),
    ((0, 3, 1, "same"), "n must be a positive integer"),
    ((5, 0, 1, "same"), "kernel must be"),
    ((5, 3, -1, "same"), "stride must be"),
    ((5, 3, 1, "full"), "padding must be 'same' or 'valid'"),
    ((5.0, 3, 1, "same"), "n must be a positive integer"),
])
def test_bad_input_raises(args, match):
    """Does conv_output_size refuse impossible or unknown settings with a clear message?"""
    with pytest.raises(ValueError, match=match):
        conv_output_size(*args)


def test_bad_specs_and_reports_raise():
    """Do ConvSpec, conv2d_params and conv_stack_report refuse bad input?"""
    with pytest.raises(ValueError, match="padding"):
        ConvSpec(8, 3, padding="causal")
    with pytest.raises(ValueError, match="kernel"):
        ConvSpec(8, (3, 3, 3))
    with pytest.raises(ValueError, match="in_channels"):
        conv2d_params(3, 3, 0, 8)
    with pytest.raises(ValueError, match="at least one"):
        conv_stack_report((8, 8, 3), [])
    with pytest.raises(ValueError, match="height, width, channels"):
        conv_stack_report((8, 8), [ConvSpec(4, 3)])
    with pytest.raises(ValueError, match="larger than the input"):
        conv_stack_report((8, 8, 3), [ConvSpec(4, 5, 2), ConvSpec(4, 5)])  # 8 -> 2, then 5 > 2
    with pytest.raises(ValueError, match="dilation"):
        ConvSpec.from_keras(keras.layers.Conv2D(4, 3, dilation_rate=2))


def test_table_and_format_bytes():
    """Does the table list the input, every layer and a total, and format_bytes use decimal units?"""
    report = conv_stack_report((8, 8, 3), [ConvSpec(4, 3, name="a"), ConvSpec(2, 3, name="b")])
    lines = report.table().splitlines()
    assert [line.split()[0] for line in lines if line[:1].isalpha()] == ["layer", "input", "a", "b", "total"]
    assert format_bytes(999) == "999 B"
    assert format_bytes(3_460_000) == "3.5 MB"
    assert format_bytes(2_500_000_000) == "2.5 GB"


def test_numpy_integers_accepted():
    """Are NumPy integers (e.g. from np.arange) accepted like Python ints?"""
    assert conv_output_size(np.int64(9), np.int32(3), np.int64(2), "valid") == 4
    report = conv_stack_report((np.int64(8), 8, 3), [ConvSpec(np.int64(4), 3)])
    assert report.input_shape == (8, 8, 3) and all(type(v) is int for v in report.input_shape)
