"""Unit tests of dcv.style: the losses on values worked out by hand, and a few transfer steps."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from dcv import style

PIXELS = np.array([[[1, 0], [0, 1]], [[1, 1], [2, 0]]], np.float32)  # 2x2 positions, 2 channels


def test_gram_matrix_by_hand_and_batched():
    """Is the Gram matrix the mean over positions of channel products, one per image?"""
    gram = np.asarray(style.gram_matrix(PIXELS[None]))
    assert gram.shape == (1, 2, 2) and gram.dtype == np.float32
    assert np.allclose(gram[0], np.array([[6, 1], [1, 2]]) / 4)
    batch = np.asarray(style.gram_matrix(np.stack([PIXELS, 2 * PIXELS])))
    assert np.allclose(batch[1], 4 * gram[0])


def test_style_and_content_losses_by_hand():
    """Do the style loss (mean over layers of Gram MSEs) and content loss (MSE) give hand values?"""
    zero = np.zeros((1, 2, 2), np.float32)
    own = np.asarray(style.gram_matrix(PIXELS[None]))
    assert np.isclose(float(style.style_loss([PIXELS[None]], [zero])), 0.65625)
    assert np.isclose(float(style.style_loss([PIXELS[None]] * 2, [zero, own])), 0.328125)
    b = np.array([1, 2, 0, 1], np.float32).reshape(1, 2, 2, 1)
    assert np.isclose(float(style.content_loss(b, np.zeros_like(b))), 1.5)
    with pytest.raises(ValueError, match="one target Gram matrix per style layer"):
        style.style_loss([PIXELS[None]], [])


def test_total_variation_by_hand_and_against_tensorflow():
    """Is the total variation the sum of absolute neighbour differences, as tf.image computes it?"""
    import tensorflow as tf

    image = np.array([[0, 1], [2, 4]], np.float32).reshape(1, 2, 2, 1)
    assert np.isclose(float(style.total_variation_loss(image)), 8)
    x = np.random.default_rng(3).uniform(-1, 1, size=(2, 6, 9, 3)).astype(np.float32)
    assert np.isclose(float(style.total_variation_loss(x)),
                      float(tf.reduce_sum(tf.image.total_variation(tf.constant(x)))), rtol=1e-5)


@pytest.mark.slow
def test_transfer_lowers_the_loss_and_keeps_the_range():
    """Do a few steps on 48x48 images lower the total loss and keep pixel values in 0..255?"""
    import skimage.data

    from dcv.pretrained import center_crop_resize

    extractor = style.style_extractor()
    assert len(extractor.outputs) == len(style.STYLE_LAYERS) + 1 and not extractor.trainable_weights
    content = center_crop_resize(skimage.data.chelsea(), 48)
    painting = center_crop_resize(skimage.data.astronaut(), 48)
    result, losses = style.transfer(extractor, content, painting, n_steps=4)
    assert result.shape == (48, 48, 3) and len(losses) == 4
    assert losses[-1] < losses[0]
    assert result.min() >= -1e-3 and result.max() <= 255 + 1e-3
    with pytest.raises(ValueError, match="RGB"):
        style.transfer(extractor, content[..., 0], painting, n_steps=1)
    with pytest.raises(ValueError, match="no layer named"):
        style.style_extractor(content_layer="no_such_layer")
