"""Where an epoch of exercise 9's reference training goes on this CPU, and what the convolutions alone need.

Measures, for the reference model read from the solution notebook (batches of 128, float32):
- the model's floating-point operations per training image (forward, plus about twice that backward),
  hence per epoch, against this machine's measured matrix-multiply and convolution rates;
- the NumPy shifting augmentation of one epoch (``ShiftedBatches.on_epoch_end``);
- training steps fed three ways: the solution's ``ShiftedBatches`` (a Keras ``PyDataset``), NumPy
  arrays shifted beforehand, and the same with XLA (``jit_compile=True``); each timed over ``--steps``
  steps after a warm-up, and scaled to one epoch of 55,000 images.
Not a test: run it by hand (``.venv/bin/python benchmarks/ex09_cpu_profile.py``), see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras
import numpy as np
import tensorflow as tf

from benchmarks import machine
from benchmarks.mnist_benchmark import reference_solution
from dcv import data, training

TRAIN_IMAGES = 55_000


def forward_flops(model: keras.Model) -> int:
    """Multiply-adds x 2 of one image's forward pass through the Conv2D and Dense layers."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            flops += 2 * h * w * c_out * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return flops


def best_of(fn, repeats: int = 5) -> float:
    """The shortest of a few timed calls (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def rates() -> tuple[float, float]:
    """This machine's float32 GFLOP/s: a 2048x2048 matrix product, and a 3x3 convolution like the model's."""
    a, b = tf.random.normal((2048, 2048)), tf.random.normal((2048, 2048))
    mm = tf.function(lambda: tf.matmul(a, b))
    mm().numpy()
    t = best_of(lambda: mm().numpy())
    x, k = tf.random.normal((128, 12, 12, 24)), tf.random.normal((3, 3, 24, 48))
    conv = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
    conv().numpy()
    tc = best_of(lambda: [conv() for _ in range(20)][-1].numpy())
    return 2 * 2048 ** 3 / t / 1e9, 20 * 2 * 128 * 144 * 48 * 24 * 9 / tc / 1e9


def time_steps(model: keras.Model, feed, steps: int, jit: bool) -> float:
    """Seconds per training step over `steps` steps, after one warm-up pass (compilation)."""
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit)
    feed(model, steps)  # warm-up: tracing and compilation
    start = time.perf_counter()
    feed(model, steps)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    """Print where an epoch's time goes, as a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps timed per way of feeding")
    args = parser.parse_args(argv)
    build, _ = reference_solution()
    X, y, _, _ = data.mnist_scaled()
    X, y = X[:TRAIN_IMAGES], y[:TRAIN_IMAGES]
    bs = training.training_config("cpu").batch_size
    n_steps = -(-TRAIN_IMAGES // bs)
    keras.utils.set_random_seed(42)
    model = build()
    per_image = 3 * forward_flops(model)  # forward, plus the gradients of inputs and weights
    matmul_rate, conv_rate = rates()
    batches = training.ShiftedBatches(X, y, bs)
    shift = best_of(batches.on_epoch_end, 3)
    shifted = np.array(batches.X_epoch[: bs * args.steps])
    labels = np.array(batches.y_epoch[: bs * args.steps])

    def pydataset(m, steps):
        for i in range(steps):
            m.train_on_batch(*batches[i])

    def arrays(m, steps):
        m.fit(shifted[: bs * steps], labels[: bs * steps], batch_size=bs, epochs=1, verbose=0, shuffle=False)

    rows = []
    for name, feed, jit in (("ShiftedBatches, one step at a time", pydataset, False),
                            ("shifted NumPy arrays, model.fit", arrays, False),
                            ("shifted NumPy arrays, model.fit, XLA", arrays, True)):
        keras.utils.set_random_seed(42)
        rows.append((name, time_steps(build(), feed, args.steps, jit) * n_steps))
    epoch_flops = per_image * TRAIN_IMAGES
    print(f"CPU: {machine.cpu()}; flags: {machine.flags()}; TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"model: {model.count_params():,} parameters, {per_image / 1e6:.1f} MFLOP per training image, "
          f"{epoch_flops / 1e12:.2f} TFLOP per epoch of {TRAIN_IMAGES:,} images")
    print(f"measured rates: matrix product {matmul_rate:.0f} GFLOP/s, 3x3 convolution {conv_rate:.0f} GFLOP/s; "
          f"the epoch's FLOPs at the convolution rate: {epoch_flops / conv_rate / 1e9:.1f} s\n")
    print("| part of an epoch | seconds |\n|---|---:|")
    print(f"| shifting augmentation (NumPy, `on_epoch_end`) | {shift:.2f} |")
    for name, seconds in rows:
        print(f"| training, {name} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
