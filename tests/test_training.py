"""Tests of dcv.training: devices, configuration, data, timing, safe saving and loading."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from dcv import training
from dcv.training import (EpochLog, ShiftedBatches, accuracy, from_scratch_problems, load_saved_model,
                          save_model, shift_images, training_config)

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


@pytest.fixture
def float32_policy():
    """Restore Keras' float32 dtype policy after a test that changes it."""
    yield
    keras.config.set_dtype_policy("float32")


# ---------------------------------------------------------------------------------------------
# devices and configuration


def test_this_machine_trains_on_its_cpu():
    """Without a GPU, does the backend train on one CPU device?"""
    assert training.accelerator() == "cpu"
    assert training.device_count() == 1
    assert training.default_distribution() is None


def test_configuration_by_device():
    """Float32 and batch 128 on a CPU; mixed precision and 512 per device on GPUs and TPUs?"""
    assert training_config("cpu") == training.TrainingConfig("cpu", 1, 128, "float32")
    assert training_config("gpu", n_devices=1) == training.TrainingConfig("gpu", 1, 512, "mixed_float16")
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


def test_mnist_arrays_are_scaled_images():
    """Are the arrays 60k/10k float32 images of shape (28, 28, 1) in [0, 1], with int labels?"""
    X_train, y_train, X_test, y_test = training.mnist_arrays()
    assert X_train.shape == (60_000, 28, 28, 1) and X_test.shape == (10_000, 28, 28, 1)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert X_train.min() == 0.0 and X_train.max() == 1.0
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]


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


# ---------------------------------------------------------------------------------------------
# saving, loading, checking


def functional_cnn() -> keras.Model:
    """The tiny CNN as a functional model (its configuration holds tensors between layers)."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Add()([x, x])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


@pytest.mark.parametrize("build", [small_cnn, functional_cnn])
def test_saved_model_loads_back_with_the_same_predictions(tmp_path, build):
    """Does a saved model (Sequential or functional) load back safely and predict exactly as before?"""
    model = build()
    X = np.random.default_rng(0).random((20, 28, 28, 1), dtype=np.float32)
    path = save_model(model, tmp_path / "model.keras")
    loaded, message = load_saved_model(path)
    assert loaded is not None, message
    assert message == f"loaded model.keras: {model.count_params():,} parameters"
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6)
    with pytest.raises(ValueError, match=".keras"):
        save_model(model, tmp_path / "model.h5")


def test_mixed_precision_model_is_saved_in_float32(tmp_path, float32_policy):
    """Is a model trained in mixed precision saved as a float32 model with the same weights?"""
    keras.config.set_dtype_policy("mixed_float16")
    model = small_cnn()
    keras.config.set_dtype_policy("float32")
    assert model.layers[0].compute_dtype == "float16"
    loaded, message = load_saved_model(save_model(model, tmp_path / "mixed.keras"))
    assert loaded is not None, message
    assert {layer.compute_dtype for layer in loaded.layers} == {"float32"}
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_missing_or_broken_files_are_explained_not_raised(tmp_path):
    """Are a missing file, a non-zip file and a zip without a model each refused with a reason?"""
    assert load_saved_model(tmp_path / "none.keras") == (
        None, "no model file: none.keras was not found next to the notebook")
    (tmp_path / "text.keras").write_text("not a model")
    assert "not a zip archive" in load_saved_model(tmp_path / "text.keras")[1]
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as archive:
        archive.writestr("hello.txt", "hi")
    assert "no readable model configuration" in load_saved_model(tmp_path / "empty.keras")[1]
    good = save_model(small_cnn(), tmp_path / "good.keras")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    model, message = load_saved_model(truncated)
    assert model is None and "truncated.keras" in message


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    """Is a file whose weights do not match its configuration refused with a reason?"""
    path = save_model(small_cnn(), tmp_path / "model.keras")
    other = save_model(keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3),
                                         keras.layers.Flatten(), keras.layers.Dense(10)]),
                       tmp_path / "other.keras")
    mixed = tmp_path / "mixed.keras"
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(other) as b, zipfile.ZipFile(mixed, "w") as out:
        for name in a.namelist():
            out.writestr(name, (b if name.endswith(".h5") else a).read(name))
    model, message = load_saved_model(mixed)
    assert model is None and "could not be loaded safely" in message


def lambda_model(marker: Path) -> keras.Model:
    """A model with a Lambda layer whose function creates `marker` when it runs."""
    def touch_and_pass(x):
        marker.touch()
        return x

    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda x: touch_and_pass(x)),
                             keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(10)])


def test_lambda_layer_is_refused_and_never_run(tmp_path):
    """Is a saved model with a Lambda layer refused by the grading loader, without running its code?"""
    marker = tmp_path / "ran"
    model = lambda_model(marker)
    model.save(tmp_path / "lambda.keras")
    marker.unlink()  # building the model ran the function once; loading must not
    loaded, message = load_saved_model(tmp_path / "lambda.keras")
    assert loaded is None
    assert message == ("lambda.keras holds Lambda (layer that runs stored Python code): refused without "
                       "loading it; use built-in Keras layers only")
    assert not marker.exists()


def test_keras_safe_mode_also_refuses_the_lambda(tmp_path):
    """Behind the loader's own check, does Keras' safe_mode refuse a Lambda's Python code too?"""
    marker = tmp_path / "ran"
    lambda_model(marker).save(tmp_path / "lambda.keras")
    marker.unlink()
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(tmp_path / "lambda.keras", safe_mode=True, compile=False)
    assert not marker.exists()


def test_unknown_custom_layer_is_refused(tmp_path):
    """Is a model with a custom layer class that the grader does not know refused with a reason?"""

    @keras.saving.register_keras_serializable(package="student")
    class Doubling(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    model = keras.Sequential([keras.Input((28, 28, 1)), Doubling(), keras.layers.Conv2D(2, 3),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(tmp_path / "custom.keras")
    del keras.saving.get_custom_objects()["student>Doubling"]
    loaded, message = load_saved_model(tmp_path / "custom.keras")
    assert loaded is None
    assert message.startswith("custom.keras holds student>Doubling (custom object): refused")


def test_custom_activation_function_is_refused(tmp_path):
    """Is a model whose activation is a registered custom function refused, while built-in ones load?"""

    @keras.saving.register_keras_serializable(package="student")
    def shifted_relu(x):
        return keras.ops.relu(x - 0.1)

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(2, 3, activation=shifted_relu),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "act.keras")
    loaded, message = load_saved_model(tmp_path / "act.keras")
    assert loaded is None and "student>shifted_relu (custom object)" in message


def test_custom_loss_in_the_compile_configuration_is_ignored(tmp_path):
    """Does a model of Keras layers compiled with a custom loss load (the compile config is never read)?"""

    @keras.saving.register_keras_serializable(package="student")
    def smoothed_loss(y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred) + 0.0

    model = small_cnn()
    model.compile("adam", smoothed_loss)
    model.save(tmp_path / "compiled.keras")
    del keras.saving.get_custom_objects()["student>smoothed_loss"]
    loaded, message = load_saved_model(tmp_path / "compiled.keras")
    assert loaded is not None, message


def test_a_small_cnn_is_from_scratch():
    """Does a CNN of Keras layers with MNIST's input and 10 outputs pass the from-scratch checks?"""
    assert from_scratch_problems(small_cnn()) == []


def test_models_that_are_not_from_scratch_cnns_are_named():
    """Are a dense-only model, a wrong input shape, a keras.applications sub-model and a huge model flagged?"""
    dense = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    assert from_scratch_problems(dense) == ["no Conv2D layer: this is not a convolutional network"]

    flat = keras.Sequential([keras.Input((784,)), keras.layers.Reshape((28, 28, 1)),
                             keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(10)])
    assert from_scratch_problems(flat) == ["input shape (None, 784): expected (None, 28, 28, 1)"]

    base = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3),
                             keras.layers.GlobalAveragePooling2D()], name="mobilenetv2_1.00_224")
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Resizing(32, 32)(inputs)
    x = keras.layers.Concatenate()([x, x, x])
    outputs = keras.layers.Dense(10)(base(x))
    wrapped = keras.Model(inputs, outputs)
    assert from_scratch_problems(wrapped) == [
        "parts named like keras.applications models: mobilenetv2_1.00_224"]
    assert from_scratch_problems(small_cnn("resnet_style_mnist")) == []  # own names are fine

    with_lambda = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda x: x + 1),
                                    keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(10)])
    assert from_scratch_problems(with_lambda) == [
        "Lambda layers run arbitrary Python code: the grader refuses them"]

    assert from_scratch_problems(small_cnn(), max_params=100) == ["1,490 parameters: more than 100"]


def test_accuracy_is_the_share_of_correct_argmax():
    """Is accuracy the fraction of images whose top-scoring class is the label?"""
    model = small_cnn()
    X = np.random.default_rng(0).random((50, 28, 28, 1), dtype=np.float32)
    predicted = model.predict(X, verbose=0).argmax(axis=1)
    y = predicted.copy()
    y[:10] = (y[:10] + 1) % 10
    assert accuracy(model, X, y, batch_size=16) == pytest.approx(0.8)


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
