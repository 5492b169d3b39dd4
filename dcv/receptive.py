"""Receptive fields of the units of a stack of convolutional and pooling layers.

Everything is computed along one axis (rows or columns), in input pixels:

* ``size``: how many input pixels one unit of a layer can see;
* ``jump``: how many input pixels apart two neighbouring units' fields are (the product of the
  strides so far, also called the effective stride);
* ``start``: the input index of the first pixel of the field of unit 0 (negative when the field
  begins in the zero padding), so unit ``i`` sees pixels ``start + i * jump`` to
  ``start + i * jump + size - 1``.

A layer's kernel spans ``span = dilation * (kernel - 1) + 1`` pixels of its input. Layer by layer,
with ``jump`` the one before the layer: ``size += (span - 1) * jump``,
``start -= pad_before * jump``, then ``jump *= stride``. ``"same"`` padding follows
TensorFlow/Keras (see ``dcv.memory.same_padding``): with a stride above 1 the zeros added before
the input depend on the input size, which must then be given.

At the borders a unit sees fewer pixels: ``field_pixels`` lists exactly the input pixels that
reach one unit (zero padding reaches nothing, nor do pixels that a 'valid' stride drops, and a
dilated kernel leaves holes). ``probe_model`` and ``influence_mask`` measure the same fields with
Keras, by feeding one-hot images to a model whose kernels are all ones (used by the tests and the
chapters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dcv.memory import conv_output_size, same_padding

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["Layer", "RF", "receptive_fields", "field_pixels", "layers_from_model", "probe_model",
           "influence_mask"]

_KINDS = ("conv", "max", "avg")
_PADDINGS = ("valid", "same")
# Keras layers that leave the height and width of every feature map unchanged, pixel by pixel.
_POINTWISE = ("InputLayer", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
              "BatchNormalization", "LayerNormalization", "GroupNormalization", "Dropout",
              "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "Rescaling", "Normalization")


def _positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 1, else raise ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Layer:
    """One convolution or pooling layer along one axis: kernel, stride, dilation, padding, kind."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    padding: str = "valid"
    kind: str = "conv"

    def __post_init__(self) -> None:
        """Validate the fields (positive integers, known padding and kind)."""
        for name in ("kernel", "stride", "dilation"):
            _positive_int(name, getattr(self, name))
        if self.padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}, got {self.padding!r}")
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if self.kind != "conv" and self.dilation != 1:
            raise ValueError("pooling layers have no dilation")

    @property
    def span(self) -> int:
        """Input pixels covered by the (dilated) kernel: ``dilation * (kernel - 1) + 1``."""
        return self.dilation * (self.kernel - 1) + 1


@dataclass(frozen=True)
class RF:
    """Receptive field of the units of one layer along one axis, in input pixels."""

    size: int
    jump: int
    start: int
    output_size: int | None = None

    @property
    def center(self) -> float:
        """Input coordinate of the centre of unit 0's field (pixel ``i`` has centre ``i``)."""
        return self.start + (self.size - 1) / 2

    def bounds(self, unit: int, clip: int | None = None) -> tuple[int, int]:
        """First and last input pixel (inclusive) seen by ``unit``, clipped to ``[0, clip)``."""
        first = self.start + unit * self.jump
        last = first + self.size - 1
        if clip is not None:
            first, last = max(first, 0), min(last, clip - 1)
        return first, last


def _as_layer(spec: Layer | Sequence[int]) -> Layer:
    """A ``Layer`` from itself or from a tuple ``(kernel, stride[, dilation])`` (valid padding)."""
    if isinstance(spec, Layer):
        return spec
    values = tuple(spec)
    if not 1 <= len(values) <= 3:
        raise ValueError(f"a layer is (kernel, stride[, dilation]), got {spec!r}")
    return Layer(*values)


def _pad_before(layer: Layer, n: int | None) -> int:
    """Zeros added before the input along the axis (input size ``n`` may be None if stride is 1)."""
    if layer.padding == "valid":
        return 0
    if n is None:
        if layer.stride != 1:
            raise ValueError("'same' padding with a stride above 1 depends on the input size: "
                             "pass input_size")
        return (layer.span - 1) // 2
    return same_padding(n, layer.span, layer.stride)[0]


def receptive_fields(layers: Sequence[Layer | Sequence[int]],
                     input_size: int | None = None) -> list[RF]:
    """Receptive field (size, jump, start, output size) of each layer's units, one RF per layer."""
    n = None if input_size is None else _positive_int("input_size", input_size)
    size, jump, start = 1, 1, 0
    fields = []
    for spec in layers:
        layer = _as_layer(spec)
        start -= _pad_before(layer, n) * jump
        size += (layer.span - 1) * jump
        jump *= layer.stride
        if n is not None:
            n = conv_output_size(n, layer.span, layer.stride, layer.padding)
        fields.append(RF(size=size, jump=jump, start=start, output_size=n))
    return fields


def field_pixels(layers: Sequence[Layer | Sequence[int]], input_size: int,
                 unit: int) -> np.ndarray:
    """Sorted input indices that reach ``unit`` of the last layer, borders and holes included."""
    specs = [_as_layer(spec) for spec in layers]
    fields = receptive_fields(specs, input_size)
    sizes = [input_size] + [rf.output_size for rf in fields]
    if not 0 <= unit < sizes[-1]:
        raise ValueError(f"unit must be in [0, {sizes[-1]}), got {unit}")
    units = np.array([unit])
    for layer, n in zip(reversed(specs), reversed(sizes[:-1])):
        # The taps of each unit in its input, minus the zeros of the padding, which reach nothing.
        taps = (units[:, None] * layer.stride - _pad_before(layer, n)
                + layer.dilation * np.arange(layer.kernel)[None, :])
        units = np.unique(taps[(taps >= 0) & (taps < n)])
    return units


def _one_axis(value: int | Sequence[int], axis: int) -> int:
    """The value of a Keras size argument (int or tuple) along ``axis``."""
    return int(value) if isinstance(value, (int, np.integer)) else int(tuple(value)[axis])


def layers_from_model(model: keras.Model, axis: int = 0) -> list[Layer]:
    """The conv and pooling layers of a Keras model as ``Layer``s along ``axis`` (0: rows)."""
    import keras

    convs = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
             keras.layers.SeparableConv2D)
    pools = {keras.layers.MaxPooling1D: "max", keras.layers.MaxPooling2D: "max",
             keras.layers.AveragePooling1D: "avg", keras.layers.AveragePooling2D: "avg"}
    result = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            result += layers_from_model(layer, axis)
        elif isinstance(layer, convs):
            result.append(Layer(_one_axis(layer.kernel_size, axis), _one_axis(layer.strides, axis),
                                _one_axis(layer.dilation_rate, axis), layer.padding, "conv"))
        elif type(layer) in pools:
            result.append(Layer(_one_axis(layer.pool_size, axis), _one_axis(layer.strides, axis),
                                1, layer.padding, pools[type(layer)]))
        elif type(layer).__name__ not in _POINTWISE:
            raise TypeError(f"cannot follow a receptive field through {type(layer).__name__} "
                            f"layer {layer.name!r}")
    return result


def probe_model(layers: Sequence[Layer | Sequence[int]], input_size: int) -> keras.Model:
    """A one-channel Keras model of square ``layers`` whose kernels are all ones (no biases)."""
    import keras

    inputs = keras.Input((input_size, input_size, 1))
    z = inputs
    for spec in layers:
        layer = _as_layer(spec)
        if layer.kind == "conv":
            z = keras.layers.Conv2D(1, layer.kernel, strides=layer.stride,
                                    dilation_rate=layer.dilation, padding=layer.padding,
                                    use_bias=False, kernel_initializer="ones")(z)
        else:
            pool = keras.layers.MaxPool2D if layer.kind == "max" else keras.layers.AvgPool2D
            z = pool(layer.kernel, strides=layer.stride, padding=layer.padding)(z)
    return keras.Model(inputs, z)


def influence_mask(model: keras.Model, batch_size: int = 1024) -> np.ndarray:
    """Boolean ``[row, col, out_row, out_col]``: does input pixel (row, col) reach the unit?"""
    # Exact for a probe_model: all its weights are positive, so a one-hot image gives a non-zero
    # value exactly to the units whose receptive field contains the hot pixel.
    height, width, channels = model.input_shape[1:]
    if channels != 1:
        raise ValueError("influence_mask expects a model with one input channel")
    n_pixels = height * width
    rows = []
    for first in range(0, n_pixels, batch_size):
        hot = np.arange(first, min(first + batch_size, n_pixels))
        x = np.zeros((len(hot), n_pixels), dtype="float32")
        x[np.arange(len(hot)), hot] = 1.0
        out = np.asarray(model(x.reshape(-1, height, width, 1), training=False))
        rows.append(out[..., 0] != 0)
    return np.concatenate(rows).reshape(height, width, *rows[0].shape[1:])
