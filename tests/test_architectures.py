"""Tests of dcv.architectures: block shapes and parameter counts against hand arithmetic."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from dcv.architectures import (
    GOOGLENET_MODULES,
    LocalResponseNormalization,
    alexnet,
    depthwise_separable_conv,
    googlenet,
    inception_module,
    lenet5,
    residual_unit,
    resnet34,
    se_block,
    weight_depth,
)


def _block_model(block, input_shape, **kwargs) -> keras.Model:
    """A model made of one block applied to an input of the given shape."""
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, block(inputs, **kwargs))


def _lrn_reference(a, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75):
    """LRN along the last axis, straight from the formula of Krizhevsky et al. (2012)."""
    out = np.empty_like(a)
    n_maps = a.shape[-1]
    for i in range(n_maps):
        lo, hi = max(0, i - depth_radius), min(n_maps, i + depth_radius + 1)
        out[..., i] = a[..., i] / (bias + alpha * (a[..., lo:hi] ** 2).sum(axis=-1)) ** beta
    return out


def test_lrn_matches_the_papers_formula():
    """Does the LRN layer compute a / (k + alpha * sum of squares over 5 neighbouring maps) ** beta?"""
    a = np.random.default_rng(0).uniform(0, 200, size=(2, 3, 3, 11)).astype("float32")
    out = LocalResponseNormalization()(a)
    np.testing.assert_allclose(np.asarray(out), _lrn_reference(a.astype("float64")), rtol=1e-5)


def test_lrn_config_round_trip():
    """Does an LRN layer rebuilt from its config keep its hyperparameters?"""
    layer = LocalResponseNormalization(depth_radius=3, bias=1.0, alpha=2e-4, beta=0.5)
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.depth_radius, clone.bias, clone.alpha, clone.beta) == (3, 1.0, 2e-4, 0.5)


def test_inception_module_shape_and_params():
    """Does inception (3a) on 28x28x192 give 28x28x256 with the parameters of its six convolutions?"""
    model = _block_model(inception_module, (28, 28, 192), **dict(zip(
        ["f1", "f3_reduce", "f3", "f5_reduce", "f5", "pool_proj"], GOOGLENET_MODULES["3a"])))
    assert model.output_shape == (None, 28, 28, 64 + 128 + 32 + 32)
    expected = ((192 + 1) * 64 + (192 + 1) * 96 + (9 * 96 + 1) * 128 + (192 + 1) * 16
                + (25 * 16 + 1) * 32 + (192 + 1) * 32)
    assert model.count_params() == expected == 163_696


def test_residual_unit_identity_shortcut():
    """Does a unit that keeps the shape use the identity shortcut (two convolutions only)?"""
    model = _block_model(residual_unit, (56, 56, 64), filters=64)
    assert model.output_shape == (None, 56, 56, 64)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) == 2
    assert model.count_params() == 2 * (9 * 64 * 64 + 4 * 64)


def test_residual_unit_projection_shortcut():
    """Does a unit with stride 2 halve the size and add a 1x1 conv + BN on the shortcut?"""
    model = _block_model(residual_unit, (56, 56, 64), filters=128, strides=2)
    assert model.output_shape == (None, 28, 28, 128)
    main = 9 * 64 * 128 + 4 * 128 + 9 * 128 * 128 + 4 * 128
    assert model.count_params() == main + 64 * 128 + 4 * 128


def test_se_block_shape_params_and_gate():
    """Does the SE block keep the shape, have 2C^2/r + C/r + C parameters, and scale maps by (0, 1)?"""
    model = _block_model(se_block, (7, 7, 64), ratio=16)
    assert model.output_shape == (None, 7, 7, 64)
    assert model.count_params() == 2 * 64 * 4 + 4 + 64
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    x = np.random.default_rng(1).normal(size=(1, 7, 7, 64)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), 0.5 * x, rtol=1e-6)  # sigmoid(0) = 0.5


def test_depthwise_separable_conv_shape_and_params():
    """Does the block halve the size with 3*3*C_in + C_in*C_out weights, plus 4 BN values per map?"""
    model = _block_model(depthwise_separable_conv, (32, 32, 32), filters=64, strides=2)
    assert model.output_shape == (None, 16, 16, 64)
    assert model.count_params() == 9 * 32 + 4 * 32 + 32 * 64 + 4 * 64


def test_lenet5_params_and_depth():
    """Does the simplified LeNet-5 have 61,706 parameters and 5 weight layers?"""
    model = lenet5()
    assert model.count_params() == 61_706
    assert weight_depth(model) == 5
    assert model.output_shape == (None, 10)


@pytest.mark.slow
def test_alexnet_params():
    """Does AlexNet have 62,378,344 parameters on one GPU and 60,965,224 split in two groups?"""
    assert alexnet().count_params() == 62_378_344
    assert alexnet(groups=2).count_params() == 60_965_224


def test_alexnet_dropout_after_fc6_and_fc7():
    """Is dropout (50%) applied to the outputs of fc6 and fc7 only, as in the paper?"""
    model = alexnet()
    names = [layer.name for layer in model.layers]
    dropouts = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Dropout)]
    assert [names[i - 1] for i in dropouts] == ["fc6", "fc7"]
    assert all(model.layers[i].rate == 0.5 for i in dropouts)
    assert names.index("fc8") == dropouts[-1] + 1  # nothing between fc7's dropout and fc8


def test_googlenet_params_depth_and_heads():
    """Does GoogLeNet have 22 weight layers, 6,998,552 parameters, and 2 extra outputs with aux heads?"""
    model = googlenet()
    assert weight_depth(model) == 22 and model.count_params() == 6_998_552
    assert model.get_layer("inception_5b_concat").output.shape[1:] == (7, 7, 1024)
    with_aux = googlenet(aux_classifiers=True)
    assert len(with_aux.outputs) == 3 and with_aux.count_params() == 13_378_280


def test_resnet34_params_and_depth():
    """Does ResNet-34 have 34 weight layers and 21,797,672 trainable parameters?"""
    model = resnet34()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert weight_depth(model) == 34 and trainable == 21_797_672
    assert model.count_params() == 21_814_696  # + BN moving means and variances


def test_weight_depth_ignores_se_gates_and_enters_submodels():
    """Does weight_depth skip the SE gate's two Dense layers and count layers inside a nested model?"""
    inputs = keras.Input((8, 8, 16))
    inner = keras.Sequential([keras.Input((8, 8, 16)), keras.layers.Conv2D(16, 3, padding="same"),
                              keras.layers.Conv2D(16, 3, padding="same")])
    x = se_block(inner(inputs), ratio=4)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    assert weight_depth(keras.Model(inputs, outputs)) == 3
