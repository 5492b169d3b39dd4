"""Tests of dcv.receptive: hand-checkable fields, and every unit's field measured with Keras."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from dcv.memory import conv_output_size
from dcv.receptive import RF, Layer, field_pixels, influence_mask, layers_from_model, probe_model, receptive_fields

# Stacks measured with Keras: paddings, strides, dilations, even kernels and both poolings.
STACKS = {
    "three_3x3": [Layer(3), Layer(3), Layer(3)],
    "vgg_like": [Layer(3, padding="same"), Layer(2, 2, kind="max"), Layer(3, padding="same"),
                 Layer(2, 2, padding="same", kind="max")],
    "strided_same": [Layer(5, 2, padding="same"), Layer(3, 2, padding="same"),
                     Layer(3, 2, kind="avg")],
    "dilated": [Layer(3, dilation=2), Layer(3, dilation=2, padding="same"),
                Layer(2, padding="same")],
    "odd_strides": [Layer(4, 3), Layer(3, 2, padding="same", kind="max")],
    "resnet_stem": [Layer(7, 2, padding="same"), Layer(3, 2, padding="same", kind="max"),
                    Layer(3, padding="same"), Layer(3, padding="same")],
}


def _sizes(fields):
    """The (size, jump, start) of each field."""
    return [(rf.size, rf.jump, rf.start) for rf in fields]


def test_three_3x3_convs_see_7_pixels():
    """Do three stacked 3x3 convolutions see 3, 5, then 7 pixels, with no stride?"""
    assert _sizes(receptive_fields([(3, 1)] * 3)) == [(3, 1, 0), (5, 1, 0), (7, 1, 0)]


def test_pooling_doubles_the_growth():
    """After a 2x2 stride-2 pooling, does a 3x3 convolution add 4 pixels instead of 2?"""
    fields = receptive_fields([(3, 1), (2, 2), (3, 1)])
    assert _sizes(fields) == [(3, 1, 0), (4, 2, 0), (8, 2, 0)]
    assert fields[-1].bounds(5) == (10, 17)


def test_dilations_1_2_4_see_15_pixels():
    """Do 3-tap kernels with dilations 1, 2, 4 see 3, 7, 15 pixels (a dilation-2 kernel spans 5)?"""
    assert Layer(3, dilation=2).span == 5
    fields = receptive_fields([(3, 1, 1), (3, 1, 2), (3, 1, 4)])
    assert [rf.size for rf in fields] == [3, 7, 15]


def test_same_padding_centres_odd_kernels():
    """With 'same' padding and stride 1, is every odd kernel's field centred on its own pixel?"""
    layers = [Layer(k, dilation=d, padding="same") for k, d in [(3, 1), (5, 1), (3, 2), (7, 3)]]
    for rf in receptive_fields(layers):
        assert rf.center == 0 and rf.jump == 1


def test_tuples_are_valid_layers():
    """Is a tuple (kernel, stride, dilation) the same as the Layer with 'valid' padding?"""
    assert receptive_fields([(5, 2), (3, 1, 2)]) == receptive_fields(
        [Layer(5, 2), Layer(3, 1, 2, "valid", "conv")])


def test_output_sizes_follow_the_stack():
    """Does output_size follow dcv.memory.conv_output_size layer by layer (span for dilation)?"""
    n = 57
    for layer, rf in zip(STACKS["resnet_stem"] + STACKS["dilated"],
                         receptive_fields(STACKS["resnet_stem"] + STACKS["dilated"], n)):
        n = conv_output_size(n, layer.span, layer.stride, layer.padding)
        assert rf.output_size == n
    assert receptive_fields([(3, 1)])[0].output_size is None


def test_bad_layers_are_refused():
    """Are bad kernels, paddings, kinds, dilated poolings and size-dependent paddings refused?"""
    for kwargs in [dict(kernel=0), dict(kernel=3, stride=0), dict(kernel=3, padding="full"),
                   dict(kernel=3, kind="min"), dict(kernel=2, dilation=2, kind="max"),
                   dict(kernel=2.0)]:
        with pytest.raises(ValueError):
            Layer(**kwargs)
    with pytest.raises(ValueError, match="input_size"):
        receptive_fields([Layer(3, 2, padding="same")])
    with pytest.raises(ValueError):
        receptive_fields([(3, 1, 1, 1)])
    with pytest.raises(ValueError):
        receptive_fields([(5, 1)], input_size=4)


def test_bounds_clip_to_the_input():
    """Does bounds() shift by the jump per unit and clip to the input when asked?"""
    rf = RF(size=7, jump=2, start=-3)
    assert rf.bounds(0) == (-3, 3) and rf.bounds(2) == (1, 7)
    assert rf.bounds(0, clip=10) == (0, 3) and rf.bounds(5, clip=10) == (7, 9)
    assert rf.center == 0


def test_dilated_kernel_leaves_holes():
    """Does a dilated first layer reach only every other pixel, until a dense layer fills them?"""
    assert field_pixels([(3, 1, 2)], 9, 0).tolist() == [0, 2, 4]
    assert field_pixels([(3, 1, 2), (3, 1, 2)], 9, 0).tolist() == [0, 2, 4, 6, 8]
    assert field_pixels([(2, 1), (3, 1, 2)], 9, 0).tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("name", [n for n in STACKS if n != "dilated"])
@pytest.mark.parametrize("n", [23, 24])
def test_field_pixels_within_bounds(name, n):
    """Are a unit's pixels inside its clipped field, and all of it when no border is involved?"""
    layers = STACKS[name]
    rf = receptive_fields(layers, n)[-1]
    interior = 0
    for unit in range(rf.output_size):
        pixels = field_pixels(layers, n, unit)
        first, last = rf.bounds(unit, clip=n)
        assert first <= pixels.min() and pixels.max() <= last
        assert len(pixels) == pixels.max() - pixels.min() + 1  # no holes without dilation
        if rf.bounds(unit) == (first, last) and all(l.padding == "valid" for l in layers):
            assert (pixels.min(), pixels.max()) == (first, last)
            interior += 1
    assert interior > 0 or any(l.padding == "same" for l in layers)


@pytest.mark.parametrize("name", list(STACKS))
@pytest.mark.parametrize("n", [23, 24])
def test_keras_measurement_matches(name, n):
    """Do one-hot images through Keras reach, for every output unit, exactly its field_pixels?"""
    layers = STACKS[name]
    rf = receptive_fields(layers, n)[-1]
    mask = influence_mask(probe_model(layers, n), batch_size=200)
    assert mask.shape == (n, n, rf.output_size, rf.output_size)
    pixels = [np.isin(np.arange(n), field_pixels(layers, n, u)) for u in range(rf.output_size)]
    for i in range(rf.output_size):
        for j in range(rf.output_size):
            assert np.array_equal(mask[:, :, i, j], np.outer(pixels[i], pixels[j])), (i, j)


def test_keras_central_unit_sees_the_whole_field():
    """Does the central unit of a deep stack reach exactly its size x size field in Keras?"""
    layers = STACKS["resnet_stem"]
    n = 64
    rf = receptive_fields(layers, n)[-1]
    unit = rf.output_size // 2
    mask = influence_mask(probe_model(layers, n))[:, :, unit, unit]
    rows, cols = np.nonzero(mask)
    first, last = rf.bounds(unit)
    assert 0 <= first and last < n
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (first, last, first, last)
    assert mask.sum() == rf.size ** 2


def test_layers_from_probe_model_round_trip():
    """Does layers_from_model read back the layers a probe model was built from?"""
    for layers in STACKS.values():
        assert layers_from_model(probe_model(layers, 24)) == layers


def test_layers_from_model_reads_each_axis():
    """Are kernels and strides read per axis, pointwise layers skipped, nested models followed?"""
    inner = keras.Sequential([keras.Input((None, None, 8)), keras.layers.MaxPool2D((2, 3))])
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(8, (3, 5), strides=(1, 2), padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        inner,
        keras.layers.Dropout(0.5),
    ])
    assert layers_from_model(model, axis=0) == [Layer(3, 1, padding="same"),
                                                Layer(2, 2, kind="max")]
    assert layers_from_model(model, axis=1) == [Layer(5, 2, padding="same"),
                                                Layer(3, 3, kind="max")]


def test_layers_from_model_refuses_flatten():
    """Is a layer that mixes all positions (Flatten) refused rather than ignored?"""
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(1, 3),
                              keras.layers.Flatten()])
    with pytest.raises(TypeError, match="Flatten"):
        layers_from_model(model)


def test_influence_mask_needs_one_channel():
    """Does influence_mask refuse a model with several input channels?"""
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.MaxPool2D()])
    with pytest.raises(ValueError):
        influence_mask(model)
