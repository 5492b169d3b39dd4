"""Train a small CNN on MNIST fast on any device, and hand the trained model to the grader safely.

Backend-neutral Keras 3 (TensorFlow, JAX or PyTorch backend): the device is found with the
backend's own query, and the model, its data and its training use Keras alone. Pieces:

- ``accelerator()``, ``device_count()``, ``training_config()``: the device Keras trains on, and the
  batch size and dtype policy for it (float32 on a CPU; mixed precision and a larger batch on a
  GPU or TPU);
- ``ShiftedBatches``: batches of randomly shifted training images (augmentation in NumPy, so it
  costs the same on every backend); the images themselves come from ``dcv.data.mnist_scaled()``;
- ``distribution_scope()``, ``default_distribution()``: data parallelism over several devices, as a
  Keras distribution (JAX) or a ``tf.distribute`` strategy (TensorFlow);
- ``EpochLog``: per-epoch training time and accuracy, and the time to first reach a target;
- ``save_model()``: the trained model as a float32 ``.keras`` file, which the grader checks and
  loads safely (``dcv.grader``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

__all__ = [
    "accelerator", "device_count", "TrainingConfig", "training_config",
    "ShiftedBatches", "distribution_scope", "default_distribution", "EpochLog", "save_model",
    "all_layers",
]

ACCELERATORS = ("gpu", "tpu")


# ---------------------------------------------------------------------------------------------
# devices and configuration


def _backend_devices() -> list[str]:
    """The devices of the current Keras backend, as "kind:index" strings (accelerators first)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        names = [d.name for d in tf.config.list_logical_devices()]
        return [f"{n.split(':')[-2].lower()}:{n.split(':')[-1]}" for n in names]
    if backend == "jax":
        import jax

        devices = [f"{d.platform.lower()}:{d.id}" for d in jax.devices()]
        return devices if any(d.startswith("cpu:") for d in devices) else [*devices, "cpu:0"]
    if backend == "torch":
        import torch

        gpus = [f"gpu:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
        mps = getattr(torch.backends, "mps", None)
        if not gpus and mps is not None and mps.is_available():
            gpus = ["gpu:0"]  # Apple silicon
        return gpus + ["cpu:0"]
    return ["cpu:0"]  # numpy and other backends: CPU only


def accelerator() -> str:
    """The kind of device the current Keras backend trains on: "gpu", "tpu" or "cpu"."""
    kinds = {d.split(":")[0] for d in _backend_devices()}
    return next((k for k in ACCELERATORS if k in kinds), "cpu")


def device_count(kind: str | None = None) -> int:
    """How many devices of a kind (default: the one Keras trains on) the backend sees."""
    kind = kind or accelerator()
    return sum(d.split(":")[0] == kind for d in _backend_devices())


def _parallel_devices(kind: str) -> int:
    """How many devices of a kind `default_distribution()` trains on together (1 without one)."""
    backend = keras.backend.backend()
    if backend == "jax" or (backend == "tensorflow" and kind in ("cpu", "gpu")):
        return device_count(kind)
    return 1  # PyTorch backend (no multi-device fit), TPUs under TensorFlow (need a TPUStrategy)


# Epochs of exercise 9's training budget: a CPU run must reach 99.4% within minutes on the slowest
# 2-core machine CI uses (see benchmarks/README.md); an accelerator affords the full schedule.
CPU_EPOCHS, ACCELERATOR_EPOCHS = 4, 10


@dataclass(frozen=True)
class TrainingConfig:
    """How to train on a device: global batch size, Keras dtype policy and the epochs of the budget."""

    device: str
    n_devices: int
    batch_size: int
    precision: str
    epochs: int

    def apply(self) -> None:
        """Set Keras' global dtype policy to this configuration's precision."""
        keras.config.set_dtype_policy(self.precision)


def training_config(device: str | None = None, n_devices: int | None = None) -> TrainingConfig:
    """Batch, precision, epochs: 128, float32, CPU_EPOCHS on a CPU; 512 a device, mixed, ACCELERATOR_EPOCHS else."""
    device = device or accelerator()
    if device not in ("cpu", *ACCELERATORS):
        raise ValueError(f"unknown device {device!r}: expected 'cpu', 'gpu' or 'tpu'")
    if device == "cpu":
        return TrainingConfig("cpu", 1, 128, "float32", CPU_EPOCHS)
    n = n_devices or _parallel_devices(device)
    precision = "mixed_bfloat16" if device == "tpu" else "mixed_float16"
    return TrainingConfig(device, n, 512 * n, precision, ACCELERATOR_EPOCHS)


# ---------------------------------------------------------------------------------------------
# data


def shift_images(X: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Each image moved by a random whole number of pixels (at most max_shift) along each axis, zero-filled."""
    if max_shift <= 0:
        return X.copy()
    s = max_shift
    pad = [(0, 0), (s, s), (s, s)] + [(0, 0)] * (X.ndim - 3)
    padded = np.pad(X, pad)
    h, w = X.shape[1:3]
    moves = rng.integers(-s, s + 1, size=(len(X), 2))
    out = np.empty_like(X)
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            rows = (moves[:, 0] == dy) & (moves[:, 1] == dx)
            out[rows] = padded[rows, s - dy:s - dy + h, s - dx:s - dx + w]
    return out


class ShiftedBatches(keras.utils.PyDataset):
    """Shuffled training batches whose images are shifted at random by up to max_shift pixels, anew each epoch."""

    def __init__(self, X: np.ndarray, y: np.ndarray, batch_size: int, max_shift: int = 2,
                 seed: int = 42, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.X, self.y, self.batch_size, self.max_shift = X, y, batch_size, max_shift
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.X) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        batch = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.X_epoch[batch], self.y_epoch[batch]

    def on_epoch_end(self) -> None:
        """Shuffle and shift the training set for the next epoch."""
        order = self.rng.permutation(len(self.X))
        self.X_epoch = shift_images(self.X[order], self.max_shift, self.rng)
        self.y_epoch = self.y[order]


# ---------------------------------------------------------------------------------------------
# several devices


def default_distribution() -> Any:
    """Data parallelism over several GPUs or CPUs (JAX: DataParallel, TensorFlow: MirroredStrategy), else None."""
    kind = accelerator()
    n = _parallel_devices(kind)
    if n < 2:
        return None
    if keras.backend.backend() == "jax":
        return keras.distribution.DataParallel(devices=keras.distribution.list_devices(kind))
    import tensorflow as tf

    return tf.distribute.MirroredStrategy([f"/{kind}:{i}" for i in range(n)])


def distribution_scope(distribution: Any = None) -> contextlib.AbstractContextManager:
    """The scope to build, compile and fit a model in: a Keras distribution's, a tf.distribute strategy's, or none."""
    if distribution is None:
        return contextlib.nullcontext()
    keras_kind = hasattr(distribution, "device_mesh") and hasattr(distribution, "distribute_dataset")
    strategy_kind = hasattr(distribution, "num_replicas_in_sync")  # a tf.distribute.Strategy
    if (keras_kind or strategy_kind) and hasattr(distribution, "scope"):
        return distribution.scope()
    raise TypeError(f"not a Keras distribution or tf.distribute strategy: {type(distribution).__name__}")


# ---------------------------------------------------------------------------------------------
# measuring


def _sync(model: keras.Model) -> None:
    """Wait for the device to finish the training steps queued so far (each backend its own way)."""
    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
        elif backend == "jax":
            import jax

            jax.block_until_ready(model.optimizer.iterations.value)
        elif backend == "tensorflow":
            model.optimizer.iterations.value.numpy()  # reading the step counter back waits for it
    except (AttributeError, TypeError, ValueError):  # no optimizer (not compiled): nothing to wait for
        pass


class EpochLog(keras.callbacks.Callback):
    """Per epoch: training wall time (validation excluded) and accuracy (``monitor``); time to reach a target."""

    def __init__(self, monitor: str = "val_accuracy", verbose: bool = False) -> None:
        super().__init__()
        self.monitor, self.verbose = monitor, verbose
        self.seconds: list[float] = []
        self.accuracy: list[float] = []
        self._start = self._stop = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Start the epoch's clock."""
        self._start, self._stop = time.perf_counter(), 0.0

    def on_test_begin(self, logs: dict | None = None) -> None:
        """Stop the clock when validation starts (once the training steps are done)."""
        _sync(self.model)
        self._stop = self._stop or time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Record the epoch's training time and accuracy (and print them if verbose)."""
        _sync(self.model)
        self.seconds.append((self._stop or time.perf_counter()) - self._start)
        self.accuracy.append(float((logs or {}).get(self.monitor, math.nan)))
        if self.verbose:
            print(f"epoch {epoch + 1:2d}: {self.seconds[-1]:6.1f} s (total {sum(self.seconds):6.1f} s), "
                  f"{self.monitor} {self.accuracy[-1]:.4f}", flush=True)

    def time_to(self, target: float) -> float | None:
        """Training seconds until the end of the first epoch whose accuracy reached target (None if never)."""
        for epoch, value in enumerate(self.accuracy):
            if value >= target:
                return sum(self.seconds[:epoch + 1])
        return None


# ---------------------------------------------------------------------------------------------
# saving, loading and checking the graded model


def _float32_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A fresh copy of a layer whose dtype policy is float32."""
    config = layer.get_config()
    config["dtype"] = "float32"
    return layer.__class__.from_config(config)


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Save a model as a .keras file in float32 (a mixed-precision model is copied to float32 first)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: the file name must end in .keras")
    mixed = any(layer.dtype_policy.compute_dtype != "float32" for layer in all_layers(model))
    if mixed:
        copy = keras.models.clone_model(model, clone_function=_float32_layer, recursive=True)
        copy.set_weights(model.get_weights())
        model = copy
    model.save(path)
    return path


def all_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer of a model, nested models included (and the nested models themselves)."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from all_layers(layer)
