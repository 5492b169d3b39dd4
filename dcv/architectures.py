"""Building blocks and reference models of classic CNN architectures, in Keras (functional API).

Blocks take a Keras tensor and return one: ``inception_module`` (GoogLeNet), ``residual_unit``
(ResNet-18/34), ``se_block`` (SENet), ``depthwise_separable_conv`` (MobileNet/Xception). Models are
built without weights, to count parameters or to train from scratch: ``lenet5``, ``alexnet``,
``googlenet``, ``resnet34``. ``weight_depth`` gives the depth that papers quote (weight layers on the
longest path), ``LocalResponseNormalization`` is AlexNet's LRN as a Keras layer.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import layers

__all__ = [
    "LocalResponseNormalization",
    "inception_module",
    "residual_unit",
    "se_block",
    "depthwise_separable_conv",
    "lenet5",
    "alexnet",
    "googlenet",
    "resnet34",
    "weight_depth",
    "GOOGLENET_MODULES",
    "RESNET34_STAGES",
]

# GoogLeNet's inception modules (Szegedy et al. 2014, Table 1): filters of the 1x1 branch, of the 1x1
# reduction before the 3x3 and of the 3x3, of the reduction before the 5x5 and of the 5x5, and of the
# 1x1 projection after the max pooling branch.
GOOGLENET_MODULES: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}

# ResNet-34 (He et al. 2015, Table 1): (filters, number of residual units) of each stage.
RESNET34_STAGES: tuple[tuple[int, int], ...] = ((64, 3), (128, 4), (256, 6), (512, 3))

# Layers that hold the weights papers count when they give a network's depth.
_WEIGHT_LAYERS = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Dense)


@keras.saving.register_keras_serializable(package="dcv")
class LocalResponseNormalization(layers.Layer):
    """AlexNet's LRN: ``a / (bias + alpha * sum of a**2 over 2*depth_radius+1 maps) ** beta``."""

    def __init__(self, depth_radius: int = 2, bias: float = 2.0, alpha: float = 1e-4,
                 beta: float = 0.75, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def call(self, inputs: Any) -> Any:
        """Normalize each activation by the activations of its neighbouring feature maps."""
        return tf.nn.local_response_normalization(inputs, depth_radius=self.depth_radius,
                                                  bias=self.bias, alpha=self.alpha, beta=self.beta)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """The output has the shape of the input."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, for saving and loading."""
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}


def inception_module(x: Any, f1: int, f3_reduce: int, f3: int, f5_reduce: int, f5: int,
                     pool_proj: int, name: str | None = None) -> Any:
    """GoogLeNet's inception module: 1x1, 1x1+3x3, 1x1+5x5 and maxpool+1x1 branches, concatenated."""
    def conv(filters: int, kernel: int, inputs: Any, suffix: str) -> Any:
        return layers.Conv2D(filters, kernel, padding="same", activation="relu",
                             name=f"{name}_{suffix}" if name else None)(inputs)

    branch1 = conv(f1, 1, x, "1x1")
    branch3 = conv(f3, 3, conv(f3_reduce, 1, x, "3x3_reduce"), "3x3")
    branch5 = conv(f5, 5, conv(f5_reduce, 1, x, "5x5_reduce"), "5x5")
    pooled = layers.MaxPool2D(3, strides=1, padding="same", name=f"{name}_pool" if name else None)(x)
    branch_pool = conv(pool_proj, 1, pooled, "pool_proj")
    return layers.Concatenate(name=f"{name}_concat" if name else None)(
        [branch1, branch3, branch5, branch_pool])


def residual_unit(x: Any, filters: int, strides: int = 1) -> Any:
    """ResNet's basic residual unit: two 3x3 conv+BN, plus a 1x1 conv+BN shortcut if shapes change."""
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    shortcut = x
    if strides > 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x)
        shortcut = layers.BatchNormalization()(shortcut)
    return layers.Activation("relu")(layers.Add()([y, shortcut]))


def se_block(x: Any, ratio: int = 16) -> Any:
    """SENet's squeeze-and-excitation block: rescale each feature map by a learned weight in (0, 1)."""
    channels = x.shape[-1]
    weights = layers.GlobalAveragePooling2D(keepdims=True)(x)  # squeeze: one number per map
    weights = layers.Dense(channels // ratio, activation="relu")(weights)
    weights = layers.Dense(channels, activation="sigmoid")(weights)  # excitation
    return layers.Multiply()([x, weights])


def depthwise_separable_conv(x: Any, filters: int, strides: int = 1) -> Any:
    """MobileNet's block: 3x3 depthwise conv+BN+ReLU, then 1x1 pointwise conv+BN+ReLU."""
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = layers.Conv2D(filters, 1, use_bias=False)(x)
    return layers.Activation("relu")(layers.BatchNormalization()(x))


def lenet5(n_classes: int = 10) -> keras.Model:
    """LeNet-5 on 32x32x1 inputs, with the usual simplifications (full C3, plain pooling, softmax)."""
    return keras.Sequential([
        keras.Input((32, 32, 1)),
        layers.Conv2D(6, 5, activation="tanh", name="C1"),
        layers.AveragePooling2D(2, name="S2"),
        layers.Conv2D(16, 5, activation="tanh", name="C3"),
        layers.AveragePooling2D(2, name="S4"),
        layers.Conv2D(120, 5, activation="tanh", name="C5"),
        layers.Flatten(),
        layers.Dense(84, activation="tanh", name="F6"),
        layers.Dense(n_classes, activation="softmax", name="output"),
    ], name="lenet5")


def alexnet(groups: int = 1, n_classes: int = 1000) -> keras.Model:
    """AlexNet on 227x227x3 inputs; ``groups=2`` splits conv2, conv4, conv5 as on the paper's two GPUs."""
    def conv(filters: int, kernel: int, name: str, strides: int = 1, split: int = 1) -> layers.Conv2D:
        padding = "valid" if strides > 1 else "same"
        return layers.Conv2D(filters, kernel, strides=strides, padding=padding, groups=split,
                             activation="relu", name=name)

    return keras.Sequential([
        keras.Input((227, 227, 3)),
        conv(96, 11, "conv1", strides=4), LocalResponseNormalization(name="lrn1"),
        layers.MaxPool2D(3, strides=2, name="pool1"),
        conv(256, 5, "conv2", split=groups), LocalResponseNormalization(name="lrn2"),
        layers.MaxPool2D(3, strides=2, name="pool2"),
        conv(384, 3, "conv3"), conv(384, 3, "conv4", split=groups),
        conv(256, 3, "conv5", split=groups),
        layers.MaxPool2D(3, strides=2, name="pool5"),
        layers.Flatten(name="flatten"),
        # Dropout (50%) on the outputs of fc6 and fc7, as in the paper (section 4.2).
        layers.Dense(4096, activation="relu", name="fc6"), layers.Dropout(0.5, name="drop6"),
        layers.Dense(4096, activation="relu", name="fc7"), layers.Dropout(0.5, name="drop7"),
        layers.Dense(n_classes, activation="softmax", name="fc8"),
    ], name="alexnet" if groups == 1 else f"alexnet_{groups}_groups")


def _auxiliary_classifier(x: Any, n_classes: int, name: str) -> Any:
    """GoogLeNet's auxiliary head: 5x5/3 average pool, 1x1 conv 128, FC 1024, dropout 0.7, softmax."""
    x = layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
    x = layers.Conv2D(128, 1, activation="relu", name=f"{name}_conv")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(layers.Flatten()(x))
    x = layers.Dropout(0.7)(x)
    return layers.Dense(n_classes, activation="softmax", name=name)(x)


def googlenet(n_classes: int = 1000, aux_classifiers: bool = False) -> keras.Model:
    """GoogLeNet (Inception v1) on 224x224x3; with ``aux_classifiers`` it has the two training heads."""
    inputs = keras.Input((224, 224, 3))
    x = layers.Conv2D(64, 7, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPool2D(3, strides=2, padding="same")(x)
    x = LocalResponseNormalization()(x)
    x = layers.Conv2D(64, 1, activation="relu", name="conv2_reduce")(x)
    x = layers.Conv2D(192, 3, padding="same", activation="relu", name="conv2")(x)
    x = LocalResponseNormalization()(x)
    aux = []
    for name, filters in GOOGLENET_MODULES.items():
        if name in ("3a", "4a", "5a"):  # a max pooling layer halves the size before each stage
            x = layers.MaxPool2D(3, strides=2, padding="same")(x)
        x = inception_module(x, *filters, name=f"inception_{name}")
        if aux_classifiers and name in ("4a", "4d"):
            aux.append(_auxiliary_classifier(x, n_classes, name=f"aux_{name}"))
    x = layers.Dropout(0.4)(layers.GlobalAveragePooling2D()(x))
    outputs = layers.Dense(n_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, [outputs, *aux] if aux else outputs, name="googlenet")


def resnet34(input_shape: tuple[int, int, int] = (224, 224, 3), n_classes: int = 1000) -> keras.Model:
    """ResNet-34: 7x7 conv stem, 3+4+6+3 residual units, global average pooling, softmax."""
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = layers.MaxPool2D(3, strides=2, padding="same")(x)
    for stage, (filters, n_units) in enumerate(RESNET34_STAGES):
        for unit in range(n_units):
            x = residual_unit(x, filters, strides=2 if stage > 0 and unit == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet34")


def weight_depth(model: keras.Model) -> int:
    """Count conv/dense layers on the longest input-to-output path (SE gates excluded), as papers do."""
    if isinstance(model, keras.Sequential):
        return sum(weight_depth(layer) if isinstance(layer, keras.Model)
                   else isinstance(layer, _WEIGHT_LAYERS) for layer in model.layers)
    depth: dict[int, int] = {}
    for op in model.operations:  # a functional model lists its operations in topological order
        parents = [depth[id(parent.operation)] for node in op._inbound_nodes
                   for parent in node.parent_nodes if id(parent.operation) in depth]
        # A Multiply scales a path by a gate (SE block): the depth is that of the path, not the gate.
        base = (min if isinstance(op, layers.Multiply) else max)(parents, default=0)
        own = weight_depth(op) if isinstance(op, keras.Model) else isinstance(op, _WEIGHT_LAYERS)
        depth[id(op)] = base + int(own)
    return max(depth[id(tensor._keras_history.operation)] for tensor in model.outputs)
