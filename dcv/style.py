"""Neural style transfer (Gatys et al., 2015) on the offline EfficientNet-Lite0 of ``dcv.pretrained``.

The conventions are those of exercise 11 (which asks students to write the same functions):

- feature maps have shape ``(B, H, W, C)``; the Gram matrix of one image is ``F^T F / (H W)``, with
  ``F`` the ``(H W) x C`` matrix of its positions, so ``gram_matrix`` returns ``(B, C, C)``;
- ``style_loss``: per style layer, the mean squared difference between the Gram matrices and their
  targets, then the mean over the layers;
- ``content_loss``: the mean squared difference between two feature maps;
- ``total_variation_loss``: the sum of absolute differences between vertically and horizontally
  neighbouring pixel values, over all channels and images.

``style_extractor`` builds a frozen model returning the style layers' outputs followed by the
content layer's; ``transfer`` optimizes an image that starts as the content image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["STYLE_LAYERS", "CONTENT_LAYER", "gram_matrix", "style_loss", "content_loss",
           "total_variation_loss", "style_extractor", "transfer"]

# The stem's activation and the first activation of stages 2 to 5 (from 1/2 down to 1/16 of the image
# side); for the content, the output of block 4c (1/16, just before the last style layer): exercise 11's choice.
STYLE_LAYERS: tuple[str, ...] = ("stem_activation", "block2a_expand_activation",
                                 "block3a_expand_activation", "block4a_expand_activation",
                                 "block5a_expand_activation")
CONTENT_LAYER = "block4c_add"


def gram_matrix(features: Any) -> Any:
    """Gram matrices ``F^T F / (H W)`` of a batch of feature maps ``(B, H, W, C)``: ``(B, C, C)``."""
    import tensorflow as tf

    features = tf.convert_to_tensor(features, dtype=tf.float32)
    n_positions = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], tf.float32)
    return tf.einsum("bijc,bijd->bcd", features, features) / n_positions


def style_loss(features: Sequence[Any], target_grams: Sequence[Any]) -> Any:
    """Mean over the layers of the mean squared difference between Gram matrices and targets."""
    import tensorflow as tf

    if len(features) != len(target_grams) or not features:
        raise ValueError(f"need one target Gram matrix per style layer: got {len(features)} "
                         f"feature maps and {len(target_grams)} targets")
    per_layer = [tf.reduce_mean(tf.square(gram_matrix(f) - tf.convert_to_tensor(g, tf.float32)))
                 for f, g in zip(features, target_grams)]
    return tf.add_n(per_layer) / len(per_layer)


def content_loss(features: Any, target_features: Any) -> Any:
    """Mean squared difference between feature maps and the target feature maps."""
    import tensorflow as tf

    features = tf.convert_to_tensor(features, tf.float32)
    return tf.reduce_mean(tf.square(features - tf.convert_to_tensor(target_features, tf.float32)))


def total_variation_loss(images: Any) -> Any:
    """Sum of absolute vertical and horizontal differences between neighbouring pixels of a batch."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images, tf.float32)
    vertical = tf.reduce_sum(tf.abs(images[:, 1:, :, :] - images[:, :-1, :, :]))
    horizontal = tf.reduce_sum(tf.abs(images[:, :, 1:, :] - images[:, :, :-1, :]))
    return vertical + horizontal


def style_extractor(style_layers: Sequence[str] = STYLE_LAYERS,
                    content_layer: str = CONTENT_LAYER, backbone: Any = None) -> Any:
    """Frozen model: preprocessed images -> [style layers' outputs..., content layer's output]."""
    import keras

    if backbone is None:
        from dcv.pretrained import efficientnet_lite0

        backbone = efficientnet_lite0(include_top=False, input_shape=(None, None, 3))
    backbone.trainable = False
    names = [*style_layers, content_layer]
    missing = [name for name in names if name not in {layer.name for layer in backbone.layers}]
    if missing:
        raise ValueError(f"the backbone has no layer named {missing}")
    return keras.Model(backbone.input, [backbone.get_layer(name).output for name in names],
                       name="style_extractor")


def transfer(extractor: Any, content_image: np.ndarray, style_image: np.ndarray, n_steps: int,
             learning_rate: float = 0.05, style_weight: float = 100.0, content_weight: float = 1.0,
             tv_weight: float = 1e-3) -> tuple[np.ndarray, list[float]]:
    """Optimize an image starting from the content image; return it (RGB 0..255) and its losses."""
    import keras
    import tensorflow as tf

    from dcv.pretrained import preprocess_input

    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    content = np.asarray(content_image, np.float32)
    style = np.asarray(style_image, np.float32)
    for name, image in (("content_image", content), ("style_image", style)):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{name} must be an (H, W, 3) RGB array, got shape {image.shape}")
    style_targets = [gram_matrix(f) for f in extractor(preprocess_input(style[None]))[:-1]]
    content_target = extractor(preprocess_input(content[None]))[-1]
    image = tf.Variable(preprocess_input(content[None]))
    optimizer = keras.optimizers.Adam(learning_rate)
    low, high = (0 - 127) / 128, (255 - 127) / 128  # pixel values 0..255 after preprocess_input

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            outputs = extractor(image, training=False)
            loss = (style_weight * style_loss(outputs[:-1], style_targets)
                    + content_weight * content_loss(outputs[-1], content_target)
                    + tv_weight * total_variation_loss(image))
        optimizer.apply_gradients([(tape.gradient(loss, image), image)])
        image.assign(tf.clip_by_value(image, low, high))
        return loss

    losses = [float(step()) for _ in range(n_steps)]
    return image.numpy()[0] * 128 + 127, losses
