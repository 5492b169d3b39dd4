"""Time the MNIST models of exercise 9 on whatever device Keras finds: per epoch, wall time and test accuracy.

Trains, in one run and on the same device, exercise 9's reference solution (``build_model`` and
``train`` read from the solution notebook ``solutions/ex09_mnist/ex09_mnist.ipynb``) and the textbook
baseline of chapter 14 (two convolutional layers of 32 and 64 filters, max pooling, a dense layer of
128 units, dropout; Nadam, no augmentation). For each: every epoch's training time (validation
excluded), the test accuracy after it, the final test accuracy and the training time until the test
accuracy first reached the target (99.5% by default). The batch size and precision come from
``dcv.training.training_config()``: float32, batches of 128 and the CPU's budget of epochs on a CPU,
mixed precision, 512 per device and more epochs on a GPU (``--epochs`` overrides the budget, the
schedules follow). Not a test: run it by hand, see ``benchmarks/README.md``.

    KERAS_BACKEND=torch python benchmarks/mnist_benchmark.py --json result.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras
import nbformat
import numpy as np

from benchmarks import machine
from dcv import data as datasets
from dcv import grader, training

SOLUTION = REPO / "solutions" / "ex09_mnist" / "ex09_mnist.ipynb"
REFERENCE_CELLS = ("solution_build_model", "solution_train")
TEXTBOOK_EPOCHS: int | None = 10  # the book's recipe; None when --epochs sets every model's epochs


def reference_solution() -> tuple:
    """Exercise 9's ``build_model`` and ``train``, executed from the solution notebook's cells."""
    nb = nbformat.read(SOLUTION, as_version=4)
    namespace = {"keras": keras, "np": np, "training": training, "grader": grader, "data": datasets}
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in REFERENCE_CELLS:
            exec(compile(cell.source, f"{SOLUTION.name}:{cell.metadata.nbgrader.grade_id}", "exec"), namespace)
    return namespace["build_model"], namespace["train"]


def textbook_model() -> keras.Model:
    """Chapter 14's baseline CNN for MNIST: conv 32, conv 64, max pool, dropout, dense 128, dropout."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer="he_normal"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu", kernel_initializer="he_normal"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(128, activation="relu", kernel_initializer="he_normal"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10),
        keras.layers.Activation("softmax", dtype="float32"),
    ], name="textbook_cnn")


def textbook_train(model: keras.Model, X_train: np.ndarray, y_train: np.ndarray,
                   config: training.TrainingConfig) -> keras.callbacks.History:
    """Chapter 14's recipe: Nadam at its default learning rate, 10 epochs (or --epochs), no augmentation."""
    model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model.fit(X_train, y_train, batch_size=config.batch_size, epochs=TEXTBOOK_EPOCHS or config.epochs,
                     verbose=0)


def device_description() -> str:
    """The backend, its version and the device it trains on, in words."""
    backend = keras.backend.backend()
    kind, n = training.accelerator(), training.device_count()
    name = machine.cpu_info()[0]
    try:
        if backend == "torch":
            import torch

            version = torch.__version__
            if kind == "gpu" and torch.cuda.is_available():
                name = torch.cuda.get_device_name(0)
        elif backend == "jax":
            import jax

            version = jax.__version__
            name = jax.devices()[0].device_kind
        else:
            import tensorflow as tf

            version = tf.__version__
            if kind == "gpu":
                name = tf.config.experimental.get_device_details(
                    tf.config.list_physical_devices("GPU")[0]).get("device_name", name)
    except Exception:
        version = "?"
    return (f"Keras {keras.__version__}, {backend} {version}; {n} x {kind} ({name}); "
            f"CPU: {machine.cpu()}; flags: {machine.flags()}")


def run(name: str, build, train, data, config: training.TrainingConfig, distribution, seed: int,
        target: float) -> dict:
    """Train one model with per-epoch test accuracy; return its timings and accuracies."""
    X_train, y_train, X_test, y_test = data
    keras.utils.set_random_seed(seed)
    config.apply()
    log = training.EpochLog(monitor="val_accuracy")
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start, cpu_start = time.perf_counter(), time.process_time()
    with training.distribution_scope(distribution):
        model = build()
        fit = model.fit

        def fit_and_test(*args, **kwargs):
            """The model's fit, plus the test set as validation data and the benchmark's log."""
            kwargs.update(validation_data=(X_test, y_test), validation_batch_size=1000)
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), log]
            return fit(*args, **kwargs)

        model.fit = fit_and_test
        train(model, X_train, y_train, config)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    final = grader.accuracy(model, X_test, y_test)
    keras.config.set_dtype_policy("float32")
    return {"model": name, "parameters": model.count_params(), "epoch_seconds": log.seconds,
            "test_accuracy": log.accuracy, "final_test_accuracy": final,
            "seconds_to_target": log.time_to(target), "training_seconds": sum(log.seconds),
            "wall_seconds": total, "process_cpu_seconds": cpu, "load_average": [load_before, load_after]}


def report(result: dict, target: float) -> str:
    """A Markdown table of one model's epochs, and a summary line."""
    lines = [f"### {result['model']} ({result['parameters']:,} parameters)", "",
             "| epoch | seconds | cumulative | test accuracy |", "|---:|---:|---:|---:|"]
    total = 0.0
    for epoch, (seconds, acc) in enumerate(zip(result["epoch_seconds"], result["test_accuracy"]), 1):
        total += seconds
        lines.append(f"| {epoch} | {seconds:.1f} | {total:.1f} | {acc:.2%} |")
    reached = result["seconds_to_target"]
    when = f"reached after {reached:.1f} s of training" if reached is not None else "not reached"
    loads = " -> ".join(f"{x:.1f}" for x in result["load_average"] if x is not None)
    lines += ["", f"final test accuracy {result['final_test_accuracy']:.2%}; {target:.1%} {when}",
              f"(training {result['training_seconds']:.1f} s; wall time with tests and set-up "
              f"{result['wall_seconds']:.1f} s; process CPU time {result['process_cpu_seconds']:.0f} s; "
              f"1-minute load average {loads or '?'})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: train the chosen models, print a table per model, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=["reference", "textbook"],
                        default=["reference", "textbook"], help="which models to train (default: both)")
    parser.add_argument("--target", type=float, default=0.995, help="test accuracy to time (default 0.995)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every model (default: the device's budget for the reference, 10 for "
                             "the textbook model); learning-rate schedules follow")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    global TEXTBOOK_EPOCHS
    config = training.training_config()
    if args.epochs:
        config, TEXTBOOK_EPOCHS = dataclasses.replace(config, epochs=args.epochs), None
    distribution = training.default_distribution()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"# MNIST benchmark, {started}\n\n{device_description()}\n{config}\n"
          f"distribution: {type(distribution).__name__ if distribution else 'none'}\n", flush=True)
    X_train, y_train, X_test, y_test = datasets.mnist_scaled()
    data = X_train[:-5000], y_train[:-5000], X_test, y_test  # the notebook's 55,000 training images
    models = {"reference": reference_solution(), "textbook": (textbook_model, textbook_train)}
    results = []
    for name in args.models:
        build, train = models[name]
        result = run(name, build, train, data, config, distribution, args.seed, args.target)
        results.append(result)
        print(report(result, args.target), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"started": started, "device": device_description(),
                                         "config": dataclasses.asdict(config),
                                         "target": args.target, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
