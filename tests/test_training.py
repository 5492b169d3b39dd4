"""Tests of dcv.training: devices, configuration, augmentation, distribution, timing."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from dcv import training
from dcv.grader import from_scratch_problems
from dcv.training import EpochLog, ShiftedBatches, shift_images, training_config

REPO = Path(__file__).resolve().parents[1]


def small_cnn(name: str = "small_cnn") -> keras.Model:
    """A tiny MNIST-shaped CNN built from Keras layers."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.MaxPooling2D(4),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name=name)


# ---------------------------------------------------------------------------------------------
# devices and configuration


def test_this_machine_trains_on_its_cpu():
    """Without a GPU, does the backend train on one CPU device?"""
    assert training.accelerator() == "cpu"
    assert training.device_count() == 1
    assert training.default_distribution() is None


def test_configuration_by_device():
    """Float32, batch 128, the CPU budget on a CPU; mixed precision, 512 per device, more epochs on GPUs and TPUs?"""
    assert training_config("cpu") == training.TrainingConfig("cpu", 1, 128, "float32", training.CPU_EPOCHS)
    assert training_config("gpu", n_devices=1) == training.TrainingConfig(
        "gpu", 1, 512, "mixed_float16", training.ACCELERATOR_EPOCHS)
    assert training.CPU_EPOCHS < training.ACCELERATOR_EPOCHS
    assert training_config("gpu", n_devices=4).batch_size == 2048
    assert training_config("tpu", n_devices=8).precision == "mixed_bfloat16"
    assert training_config() == training_config("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        training_config("npu")


def test_apply_sets_the_dtype_policy(float32_policy):
    """Does applying a GPU configuration make new layers compute in float16 with float32 weights?"""
    training_config("gpu", n_devices=1).apply()
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    assert (layer.compute_dtype, layer.variable_dtype) == ("float16", "float32")


# ---------------------------------------------------------------------------------------------
# data


def test_shift_moves_each_image_by_at_most_max_shift():
    """Is each image a copy of its original moved by whole pixels, at most max_shift, in every direction?"""
    X = np.zeros((500, 9, 9, 1), np.float32)
    X[:, 4, 4, 0] = 1.0  # one lit pixel in the middle
    moved = shift_images(X, 2, np.random.default_rng(0))
    rows, cols = np.nonzero(moved[..., 0].reshape(500, -1) > 0)[1] // 9, np.nonzero(
        moved[..., 0].reshape(500, -1) > 0)[1] % 9
    assert moved.shape == X.shape and moved.sum() == 500  # nothing lost, nothing added
    assert set(rows - 4) == set(cols - 4) == {-2, -1, 0, 1, 2}
    np.testing.assert_array_equal(shift_images(X, 0, np.random.default_rng(0)), X)


def test_shifted_batches_keep_labels_with_images_and_reshuffle():
    """Do batches keep each label with its image, cover the set once, and change order each epoch?"""
    y = np.arange(300) % 10
    X = np.zeros((300, 28, 28, 1), np.float32)
    X[:, 10:18, 10:18, 0] = y[:, None, None] + 1.0  # the pixel value encodes the label
    batches = ShiftedBatches(X, y, batch_size=128, max_shift=2, seed=1)
    assert len(batches) == 3
    first = [batches[i] for i in range(len(batches))]
    assert [len(b[1]) for b in first] == [128, 128, 44]
    for images, labels in first:
        np.testing.assert_array_equal(images.max(axis=(1, 2, 3)), labels + 1.0)
        assert images.shape[1:] == (28, 28, 1)
    batches.on_epoch_end()
    assert not np.array_equal(batches[0][1], first[0][1])
    assert sorted(np.concatenate([b[1] for b in first]).tolist()) == sorted(y.tolist())


# ---------------------------------------------------------------------------------------------
# distribution


def test_distribution_scope_accepts_none_and_refuses_others():
    """Is no distribution a null scope, and something that is none an error?"""
    with training.distribution_scope(None):
        pass
    with pytest.raises(TypeError, match="not a Keras distribution"):
        training.distribution_scope("mirrored")


def test_keras_distribution_scope_is_the_distributions_own():
    """Does a Keras DataParallel distribution become the current one inside its scope?"""
    data_parallel = keras.distribution.DataParallel(devices=["cpu:0"])
    with training.distribution_scope(data_parallel):
        assert keras.distribution.distribution() is data_parallel
    assert keras.distribution.distribution() is None


TWO_CPUS = textwrap.dedent("""
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from dcv import training
    keras.utils.set_random_seed(0)
    strategy = training.default_distribution()
    print("devices", training.accelerator(), training.device_count())
    print("replicas", strategy.num_replicas_in_sync)
    X = np.random.default_rng(0).random((256, 28, 28, 1), dtype=np.float32)
    y = (X[:, :14].mean(axis=(1, 2, 3)) > X[:, 14:].mean(axis=(1, 2, 3))).astype("int64")
    with training.distribution_scope(strategy):
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        log = training.EpochLog(monitor="accuracy")
        model.fit(X, y, batch_size=64, epochs=2, verbose=0, callbacks=[log])
    print("variables", type(model.trainable_variables[0]).__name__)
    print("epochs", len(log.seconds))
""")


@pytest.mark.slow
def test_training_is_data_parallel_over_two_logical_cpus():
    """With two logical CPUs, is a tf.distribute strategy of 2 replicas used, and does fit run in it?"""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", TWO_CPUS], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["devices"] == "cpu 2"
    assert lines["replicas"] == "2"
    assert lines["epochs"] == "2"


# ---------------------------------------------------------------------------------------------
# timing


def test_time_to_target_is_the_first_epoch_reaching_it():
    """Is the time to a target the training time up to the first epoch at or above it?"""
    log = EpochLog()
    log.seconds, log.accuracy = [2.0, 3.0, 4.0, 5.0], [0.98, 0.995, 0.994, 0.996]
    assert log.time_to(0.99) == 5.0
    assert log.time_to(0.996) == 14.0
    assert log.time_to(0.999) is None


def test_epoch_log_records_each_epoch_of_a_fit(capsys):
    """Does the callback record one time and one validation accuracy per epoch, and print them?"""
    keras.utils.set_random_seed(0)
    X = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    y = np.arange(64) % 10
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    log = EpochLog(verbose=True)
    model.fit(X, y, validation_data=(X, y), epochs=3, batch_size=32, verbose=0, callbacks=[log])
    assert len(log.seconds) == len(log.accuracy) == 3
    assert all(s > 0 for s in log.seconds) and all(0 <= a <= 1 for a in log.accuracy)
    assert capsys.readouterr().out.count("val_accuracy") == 3


def test_benchmark_trains_the_solution_notebooks_reference():
    """Does the benchmark script find exercise 9's build_model and train in the solution notebook?"""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mnist_benchmark", REPO / "benchmarks" / "mnist_benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    build_model, train = benchmark.reference_solution()
    assert from_scratch_problems(build_model()) == []
    assert callable(train)
    assert benchmark.textbook_model().count_params() == 1_625_866
