"""Tests of dcv.grader: saving and loading a handed-in model safely, the from-scratch checks, accuracy."""

from __future__ import annotations

import functools
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from test_training import small_cnn  # the same tiny CNN

from dcv.grader import (
    accuracy,
    equals,
    fingerprint,
    from_scratch_problems,
    load_saved_model,
    not_keras,
    numeric_array,
    pretrained_uses,
)
from dcv.training import save_model

# ---------------------------------------------------------------------------------------------
# saving, loading, checking the handed-in model


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


def _with_registered_name(path: Path, out: Path, layer: int, registered: str) -> None:
    """A copy of a saved Sequential model whose `layer`-th layer's configuration names `registered`."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][layer]["registered_name"] = registered
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def _spoof_dense():
    """A Dense of the notebook's own that says it is Keras' (`__module__`), and counts its calls."""

    class Dense(keras.layers.Dense):
        __module__ = "keras.src.layers.core.dense"
        calls = 0

        def call(self, x):
            Dense.calls += 1
            return super().call(x)

    return Dense


def test_a_class_registered_in_the_notebook_cannot_stand_in_for_a_keras_layer(tmp_path):
    """A notebook's class registered under some name, and the file's Dense naming it: once this loaded the
    notebook's class in place of Keras' Dense, passing every check (its `__module__` says Keras). Refused?"""
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "plain.keras")
    _with_registered_name(tmp_path / "plain.keras", tmp_path / "named.keras", -1, "Stand-in")
    spoof = _spoof_dense()
    registry = keras.saving.get_custom_objects()
    registry["Stand-in"] = spoof
    try:
        with keras.saving.custom_object_scope({"Stand-in": spoof}):
            loaded, message = load_saved_model(tmp_path / "named.keras")
        assert loaded is None and "could not be loaded safely" in message, message
        assert registry["Stand-in"] is spoof  # the notebook's registry is left as it was
        plain, message = load_saved_model(tmp_path / "plain.keras")
        assert plain is not None and type(plain.layers[-1]) is keras.layers.Dense, message
    finally:
        del registry["Stand-in"]


def test_keras_lookup_tables_changed_by_the_notebook_are_caught_after_loading(tmp_path, monkeypatch):
    """Keras' own tables of names (public names -> classes, activation names -> functions) are dictionaries a
    notebook can write into without assigning any attribute. What they hand out is checked after loading."""
    from keras.src import activations, api_export

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "plain.keras")
    monkeypatch.setitem(api_export.REGISTERED_NAMES_TO_OBJS, "keras.layers.Dense", _spoof_dense())
    loaded, message = load_saved_model(tmp_path / "plain.keras")
    assert loaded is None and "not Keras' own" in message and ".Dense of keras.src.layers.core.dense)" in message, \
        message
    monkeypatch.undo()

    def softmax(x, axis=-1):
        return keras.ops.softmax(x, axis)

    monkeypatch.setitem(activations.ALL_OBJECTS_DICT, "softmax", softmax)
    loaded, message = load_saved_model(tmp_path / "plain.keras")
    assert loaded is None and ".activation (" in message and ".softmax)" in message, message
    monkeypatch.undo()
    assert not_keras(load_saved_model(tmp_path / "plain.keras")[0]) == []


def test_what_a_layer_holds_must_be_a_librarys_too():
    """An object of the notebook's class in a layer (a dtype policy whose methods run at every call), one that
    claims a library's module, a notebook's function in a layer's list, or behind Keras' own objects however
    deep (another layer's bound `__call__`, a cache's wrapper, partials of partials): each is named."""
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    dense = model.layers[-1]

    class Policy(type(dense.dtype_policy)):
        pass

    class Claims(type(dense.dtype_policy)):  # (a class that claims a module and has no code is its base's)
        __module__ = type(dense.dtype_policy).__module__

        def convert_input(self, x, autocast, dtype):
            return x

    inner = keras.layers.Dense(10, activation=lambda x: x)  # Keras' layer, its activation the notebook's
    for value, named in [(Policy("float32"), "Policy of"), (Claims("float32"), "Claims of keras.src"),
                         ([abs, lambda x: x], "<lambda>"), (functools.partial(max, lambda x: x), "<lambda>"),
                         (inner.__call__, "<lambda>"), (functools.lru_cache(lambda x: x), "<lambda>"),
                         (functools.partial(max, functools.partial(min, [inner.__call__])), "<lambda>")]:
        dense.own = value
        assert any(line.startswith(f"{dense.name}.own (") and named in line for line in not_keras(model)), value
    del dense.own
    assert not_keras(model) == []


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


def test_accuracy_is_computed_once_per_model_and_data(monkeypatch):
    """Is the same model on the same images scored once, and anything changed scored anew?"""
    model = small_cnn()
    X = np.random.default_rng(1).random((40, 28, 28, 1), dtype=np.float32)
    y = model.predict(X, verbose=0).argmax(axis=1)
    calls = []
    concatenate = np.concatenate  # once per scoring: the batches' scores put together
    monkeypatch.setattr(np, "concatenate", lambda parts, **k: calls.append(sum(map(len, parts))) or concatenate(parts))
    assert accuracy(model, X, y) == 1.0 and calls == [40]
    same_file_again = keras.models.clone_model(model)  # another object, same architecture and weights
    same_file_again.set_weights(model.get_weights())
    assert fingerprint(same_file_again) == fingerprint(model)
    assert accuracy(model, X, y) == 1.0 and calls == [40]
    other_labels = (y + 1) % 10
    assert accuracy(model, X, other_labels) == 0.0 and calls == [40, 40]
    model.set_weights([w * 0 for w in model.get_weights()])  # every score equal: argmax picks class 0
    assert fingerprint(model) != fingerprint(same_file_again)
    assert accuracy(model, X, y) == pytest.approx(np.mean(y == 0)) and calls == [40, 40, 40]


def test_a_model_that_imitates_another_is_scored_but_never_remembered():
    """An object with a real model's configuration and weights (so its fingerprint) whose predictions are the
    labels: scored as it answers, but its score is never what the real model gets afterwards."""
    model = small_cnn()
    rng = np.random.default_rng(2)
    X, y = rng.random((30, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 30)

    class Imitation:
        def to_json(self):
            return model.to_json()

        def get_weights(self):
            return model.get_weights()

        def predict_on_batch(self, images):
            return np.eye(10)[y[:len(images)]]

    assert fingerprint(Imitation()) == fingerprint(model)
    assert accuracy(Imitation(), X, y) == 1.0
    assert accuracy(model, X, y) == pytest.approx(np.mean(model.predict(X, verbose=0).argmax(axis=1) == y))
    assert accuracy(model, X, y) < 1.0




# ---------------------------------------------------------------------------------------------
# the code that ran: no pretrained network


@pytest.mark.parametrize("code", [
    "import keras\nmodel = keras.applications.ResNet50(weights=None)",
    "from keras.applications import MobileNetV2",
    "from keras import applications",
    "import tensorflow as tf\nbase = tf.keras.applications.VGG16()",
    "import keras_hub\nm = keras_hub.models.ImageClassifier.from_preset('resnet_18_imagenet')",
    "import torch\nnet = torch.hub.load('pytorch/vision', 'resnet18')",
    "from dcv import pretrained",
    "import dcv.pretrained as p",
])
def test_pretrained_networks_in_code_are_found(code):
    """Is each import or use of a pretrained network found, with its cell and line?"""
    found = pretrained_uses(["x = 1", code])
    assert found and all(f.startswith("cell 2, line ") for f in found), found


def test_comments_strings_and_own_code_are_not_pretrained():
    """Do comments, strings and one's own model code pass the check (a substring search would not)?"""
    cells = ["# no keras.applications here: the model is built from scratch\nnote = 'applications'",
             "import keras\nmodel = keras.Sequential([keras.layers.Conv2D(8, 3)])",
             "get_ipython().run_line_magic('time', 'x = 1')",
             "def broken(:\n"]  # a cell that does not parse never ran
    assert pretrained_uses(cells) == []


class AlwaysEqual(int):
    """A hostile answer: an int whose == says yes to anything."""

    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


def test_equals_compares_plain_numbers_and_is_not_fooled():
    """Does equals accept right plain numbers (NumPy's too), and refuse wrong ones and an always-equal object?"""
    assert equals(1792, 1792) and equals(np.int64(1792), 1792) and equals((4, 4), (4, 4))
    assert not equals(1793, 1792) and not equals((4, 5), (4, 4)) and not equals([4], (4, 4))
    assert AlwaysEqual(0) == 1792  # what fools a plain ==
    assert not equals(AlwaysEqual(0), 1792) and not equals((AlwaysEqual(0), 4), (4, 4))
    assert not equals("1792", 1792) and not equals(None, 0)
    assert equals({"conv": 84, "max_pool": 0}, {"max_pool": 0, "conv": 84}) and equals({"a", "b"}, {"b", "a"})
    assert not equals({"conv": AlwaysEqual(0), "max_pool": 0}, {"max_pool": 0, "conv": 84})
    assert not equals({"conv": 84}, {"max_pool": 0, "conv": 84}) and not equals({AlwaysEqual(0)}, {84})


class AgreesWithNumPy:
    """A hostile answer: whatever NumPy function gets it says yes, and np.asarray makes an array of objects
    whose == says yes."""

    def __array_function__(self, func, types, args, kwargs):
        return True

    def __array__(self, dtype=None, copy=None):
        out = np.empty((2, 3), dtype=object)
        out[:] = [[AlwaysEqual(0)] * 3] * 2
        return out


def test_numeric_array_accepts_arrays_of_numbers_only():
    """Does numeric_array pass arrays, tensors and lists of numbers through, and refuse what fools NumPy?"""
    assert numeric_array([[1, 2, 3], [4, 5, 6]]).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert numeric_array(keras.ops.ones((2, 3))).dtype == np.float32
    assert numeric_array(np.array([True, False])).dtype == bool and numeric_array(np.uint8(7)).shape == ()

    class Subclass(np.ndarray):
        def __eq__(self, other):
            return np.ones(self.shape, bool)

    assert type(numeric_array(np.zeros(3).view(Subclass))) is np.ndarray  # its == is gone
    fool = AgreesWithNumPy()
    assert np.allclose(fool, np.ones((2, 3))) and np.array_equal(np.asarray(fool), np.ones((2, 3)))  # fooled
    for bad, said in [(fool, "AgreesWithNumPy of objects"), (None, "NoneType"), (["1", "2"], "list of strings"),
                      ([1j], "list of complex numbers"), ([[1, 2], [3]], "list")]:
        with pytest.raises(AssertionError, match=f"lrn's output must be an array of numbers, not {said}"):
            numeric_array(bad, "lrn's output")
