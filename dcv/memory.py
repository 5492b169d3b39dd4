"""Output sizes, parameter counts and memory (bytes) of stacks of 2D convolutional layers.

Conventions of the course (the same as the assignment of exercise 2):

* sizes are integers of bytes; float32 takes ``dtype_bytes=4`` bytes per value;
* ``"same"`` padding rounds the output size up: ``ceil(n / stride)``;
  ``"valid"`` padding: ``floor((n - kernel) / stride) + 1``;
* **inference** (one instance) = parameter bytes + the largest total of two consecutive tensors
  in the sequence ``[input, output_1, ..., output_L]`` (a layer needs its input and its output
  at the same time; everything older can be freed);
* **training** on a batch of ``B`` instances = ``B`` x (all layer outputs) + ``B`` x (input)
  + parameter bytes (backpropagation keeps every activation of the forward pass).

Both are lower bounds: gradients, optimizer states and framework workspace are not counted.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "conv_output_size",
    "same_padding",
    "conv2d_params",
    "ConvSpec",
    "LayerRow",
    "StackReport",
    "conv_stack_report",
    "max_batch_size",
    "format_bytes",
]

_PADDINGS = ("same", "valid")


def _positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer >= 1, else raise ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _padding(padding: str) -> str:
    """Return the padding in lower case, or raise ValueError if it is not 'same' or 'valid'."""
    mode = padding.lower() if isinstance(padding, str) else padding
    if mode not in _PADDINGS:
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    return mode


def _pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """Return ``(value, value)`` for an int, or a validated pair of positive ints."""
    if isinstance(value, numbers.Integral):
        return (_positive_int(name, value),) * 2
    pair = tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return _positive_int(name, pair[0]), _positive_int(name, pair[1])


def conv_output_size(n: int, kernel: int, stride: int = 1, padding: str = "valid") -> int:
    """Size of a convolution's output along one axis of length ``n``."""
    n, kernel, stride = (_positive_int(k, v) for k, v in
                         (("n", n), ("kernel", kernel), ("stride", stride)))
    if _padding(padding) == "same":
        return -(-n // stride)  # ceil(n / stride) in integers
    if kernel > n:
        raise ValueError(f"kernel {kernel} is larger than the input size {n} with 'valid' "
                         "padding: the output would be empty")
    return (n - kernel) // stride + 1


def same_padding(n: int, kernel: int, stride: int = 1) -> tuple[int, int]:
    """Zeros added (before, after) along one axis by TensorFlow/Keras ``"same"`` padding."""
    out = conv_output_size(n, kernel, stride, "same")
    total = max((out - 1) * stride + kernel - n, 0)
    return total // 2, total - total // 2


def conv2d_params(kernel_h: int, kernel_w: int, in_channels: int, filters: int,
                  use_bias: bool = True) -> int:
    """Trainable parameters of a Conv2D layer: (kernel_h x kernel_w x in_channels + bias) x filters."""
    kernel_h, kernel_w, in_channels, filters = (_positive_int(k, v) for k, v in (
        ("kernel_h", kernel_h), ("kernel_w", kernel_w), ("in_channels", in_channels), ("filters", filters)))
    return (kernel_h * kernel_w * in_channels + int(bool(use_bias))) * filters


@dataclass(frozen=True)
class ConvSpec:
    """One Conv2D layer: number of filters, kernel size, stride, padding, bias."""

    filters: int
    kernel: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: str = "valid"
    use_bias: bool = True
    name: str | None = None

    def __post_init__(self) -> None:
        """Validate the fields (raise ValueError on a bad one)."""
        _positive_int("filters", self.filters)
        _pair("kernel", self.kernel)
        _pair("stride", self.stride)
        _padding(self.padding)

    @property
    def kernel_hw(self) -> tuple[int, int]:
        """Kernel (height, width)."""
        return _pair("kernel", self.kernel)

    @property
    def stride_hw(self) -> tuple[int, int]:
        """Stride (vertical, horizontal)."""
        return _pair("stride", self.stride)

    @classmethod
    def from_keras(cls, layer: Any) -> ConvSpec:
        """Spec of a Keras ``Conv2D`` layer (channels last, no dilation, no groups)."""
        if tuple(getattr(layer, "dilation_rate", (1, 1))) != (1, 1) or getattr(layer, "groups", 1) != 1:
            raise ValueError(f"layer {layer.name!r}: dilation and groups are not supported")
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(f"layer {layer.name!r}: only channels_last is supported")
        return cls(filters=layer.filters, kernel=tuple(layer.kernel_size), stride=tuple(layer.strides),
                   padding=layer.padding, use_bias=layer.use_bias, name=layer.name)


@dataclass(frozen=True)
class LayerRow:
    """One layer of a report: output shape (h, w, maps), parameters, values and bytes per instance."""

    name: str
    output_shape: tuple[int, int, int]
    params: int
    output_values: int
    output_bytes: int


@dataclass(frozen=True)
class StackReport:
    """Per-layer rows and memory totals of a conv stack (see the module docstring for conventions)."""

    input_shape: tuple[int, int, int]
    rows: tuple[LayerRow, ...]
    dtype_bytes: int
    batch_size: int

    @property
    def total_params(self) -> int:
        """Parameters of all layers."""
        return sum(r.params for r in self.rows)

    @property
    def param_bytes(self) -> int:
        """Bytes taken by the parameters."""
        return self.total_params * self.dtype_bytes

    @property
    def input_bytes(self) -> int:
        """Bytes of one input instance."""
        return math.prod(self.input_shape) * self.dtype_bytes

    @property
    def output_bytes(self) -> int:
        """Bytes of all layer outputs for one instance."""
        return sum(r.output_bytes for r in self.rows)

    @property
    def tensor_bytes(self) -> tuple[int, ...]:
        """Bytes of the sequence [input, output_1, ..., output_L] for one instance."""
        return (self.input_bytes, *(r.output_bytes for r in self.rows))

    @property
    def inference_peak(self) -> int:
        """Index i of the heaviest consecutive pair (tensor i, tensor i + 1) in ``tensor_bytes``."""
        t = self.tensor_bytes
        return max(range(len(t) - 1), key=lambda i: t[i] + t[i + 1])

    @property
    def inference_bytes(self) -> int:
        """Bytes to predict one instance: parameters + heaviest pair of consecutive tensors."""
        i, t = self.inference_peak, self.tensor_bytes
        return self.param_bytes + t[i] + t[i + 1]

    def training_bytes_for(self, batch_size: int) -> int:
        """Bytes to train on a batch: batch x (input + all outputs) + parameters."""
        batch_size = _positive_int("batch_size", batch_size)
        return batch_size * (self.input_bytes + self.output_bytes) + self.param_bytes

    @property
    def training_bytes(self) -> int:
        """Bytes to train on a batch of ``batch_size`` instances."""
        return self.training_bytes_for(self.batch_size)

    def table(self) -> str:
        """The report as a plain-text table, with a totals line."""
        head = ("layer", "output shape", "params", "values/instance", "bytes/instance")
        lines = [("input", "x".join(map(str, self.input_shape)), "0",
                  f"{math.prod(self.input_shape):,}", f"{self.input_bytes:,}")]
        lines += [(r.name, "x".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.output_values:,}",
                   f"{r.output_bytes:,}") for r in self.rows]
        total = ("total (outputs)", "", f"{self.total_params:,}",
                 f"{sum(r.output_values for r in self.rows):,}", f"{self.output_bytes:,}")
        widths = [max(len(row[j]) for row in (head, *lines, total)) for j in range(len(head))]
        fmt = lambda row: "  ".join(c.ljust(w) if j < 2 else c.rjust(w)
                                    for j, (c, w) in enumerate(zip(row, widths)))
        rule = "-" * len(fmt(head))
        return "\n".join([fmt(head), rule, *map(fmt, lines), rule, fmt(total)])


def conv_stack_report(input_shape: tuple[int, int, int], layers: Sequence[ConvSpec],
                      dtype_bytes: int = 4, batch_size: int = 1) -> StackReport:
    """Shapes, parameters and bytes of a sequence of Conv2D layers on an (h, w, channels) input."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    h0, w0, c0 = (_positive_int(k, v) for k, v in zip(("height", "width", "channels"), input_shape))
    h, w, c = h0, w0, c0
    _positive_int("dtype_bytes", dtype_bytes)
    _positive_int("batch_size", batch_size)
    if not layers:
        raise ValueError("layers must contain at least one ConvSpec")
    rows = []
    for i, spec in enumerate(layers, start=1):
        (kh, kw), (sh, sw) = spec.kernel_hw, spec.stride_hw
        h, w = conv_output_size(h, kh, sh, spec.padding), conv_output_size(w, kw, sw, spec.padding)
        params = conv2d_params(kh, kw, c, spec.filters, spec.use_bias)
        c = spec.filters
        values = h * w * c
        rows.append(LayerRow(spec.name or f"conv{i}", (h, w, c), params, values, values * dtype_bytes))
    return StackReport((h0, w0, c0), tuple(rows), dtype_bytes, batch_size)


def max_batch_size(report: StackReport, budget_bytes: int) -> int:
    """Largest batch whose training bytes fit in ``budget_bytes`` (0 if not even one instance fits)."""
    per_instance = report.input_bytes + report.output_bytes
    return max((budget_bytes - report.param_bytes) // per_instance, 0)


def format_bytes(n: int) -> str:
    """Bytes in decimal units (1 kB = 1,000 B, 1 MB = 10**6 B, ...), e.g. ``'12.6 MB'``."""
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
