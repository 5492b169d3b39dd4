"""The graders' checks: compare an answer without being fooled; load a handed-in model safely, check it is
the student's own CNN, score it (exercise 9).

- ``equals()``: an answer equals the expected number (or tuple of numbers) and is a plain number, so an
  object whose ``==`` always says yes scores nothing;
- ``numeric_array()``: an answer as a NumPy array of numbers, so that no object (or array of objects) can
  make ``np.allclose`` or ``np.array_equal`` say yes;

- ``load_saved_model()``: a ``.keras`` file loaded with ``safe_mode`` and ``compile=False``; a
  ``Lambda`` layer or any class or function that is not Keras' own is refused before anything runs;
  it loads with Keras' registries of custom objects emptied (a notebook's class registered under any
  name cannot stand in for the file's), and ``not_keras()`` refuses after loading any layer, operation
  or function in the model that is not Keras' own code (Keras' tables of names are dictionaries a
  notebook can write into);
- ``from_scratch_problems()``: why a model is not a from-scratch MNIST CNN made of Keras layers;
- ``pretrained_uses()``: where code imports or calls a pretrained network (read with ``ast``, so
  comments and strings never count);
- ``accuracy()``: the share of images whose top-scoring class is the label, computed once per model and
  data in a process (exercise 9's two test-accuracy tiers score the same file on the same images).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import os
import re
import sys
import sysconfig
import types
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from dcv.training import all_layers

__all__ = ["equals", "numeric_array", "load_saved_model", "not_keras", "from_scratch_problems", "pretrained_uses",
           "accuracy", "fingerprint", "MAX_PARAMS", "APPLICATION_NAMES", "REFUSED_LAYERS", "PRETRAINED_MODULES"]

# A from-scratch MNIST CNN needs far fewer: the HOML baseline has 1.6 M parameters.
MAX_PARAMS = 5_000_000
# Names `keras.applications` gives its models (resnet50, mobilenetv2_1.00_224, efficientnetb0,
# vgg16, inception_v3, ...): a nested model so named is a known architecture, not one's own CNN.
APPLICATION_NAMES = re.compile(r"(convnext|densenet\d|efficientnet|inception|mobilenet|nasnet|"
                               r"resnet\d|regnet|vgg\d|xception)", re.IGNORECASE)
# Layers that run Python code stored in the file: refused before Keras deserializes anything.
REFUSED_LAYERS = frozenset({"Lambda", "TFSMLayer"})
# What Keras writes for plain data (tensors, arrays, bytes, slices) in a model's configuration.
_DATA_MARKERS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__slice__",
                           "__ellipsis__", "__typespec__"})
# Modules that hand out pretrained networks (an import of any of them, or of their submodules).
PRETRAINED_MODULES = ("keras.applications", "tensorflow.keras.applications", "tf.keras.applications",
                      "keras_hub", "keras_nlp", "keras_cv", "tensorflow_hub", "torch.hub",
                      "torchvision.models", "timm", "transformers", "huggingface_hub", "dcv.pretrained")
# Attribute names whose use means a pretrained model: `keras.applications.X`, `Model.from_preset(...)`.
PRETRAINED_ATTRIBUTES = ("applications", "from_preset", "hub", "pretrained")


# Exact types an answer may have: Python's and NumPy's own numbers and strings, never a subclass
# (whose == could lie).
PLAIN = frozenset({int, float, str, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                   np.uint64, np.float16, np.float32, np.float64})


def equals(value: Any, expected: Any) -> bool:
    """Whether value == expected, in the same containers (tuple/list, dict, set) of plain numbers or strings."""
    if type(expected) in (tuple, list):
        return (type(value) in (tuple, list) and len(value) == len(expected)
                and all(equals(v, e) for v, e in zip(value, expected)))
    if type(expected) is dict:
        return (type(value) is dict and all(type(k) in PLAIN for k in value) and set(value) == set(expected)
                and all(equals(value[k], expected[k]) for k in expected))
    if type(expected) in (set, frozenset):
        return type(value) in (set, frozenset) and all(type(v) in PLAIN for v in value) and value == expected
    return type(value) in PLAIN and bool(value == expected)


# What an array holds when it is not numbers, for the message of `numeric_array()`.
_KINDS = {"O": "objects", "U": "strings", "S": "bytes", "c": "complex numbers", "M": "dates", "m": "durations",
          "V": "records"}


def numeric_array(value: Any, what: str = "the answer") -> np.ndarray:
    """`value` as a NumPy array of booleans, integers or floats; AssertionError saying what it got otherwise."""
    try:
        array = np.asarray(value)  # a tensor or a list of numbers converts; an ndarray subclass loses its class
    except Exception as exc:  # an object whose conversion fails
        raise AssertionError(f"{what} must be an array of numbers, not {type(value).__name__} "
                             f"({type(exc).__name__} when converted)") from None
    if type(array) is not np.ndarray or array.dtype.kind not in "biuf":
        held = f" of {_KINDS.get(array.dtype.kind, str(array.dtype))}" if array.ndim else ""
        raise AssertionError(f"{what} must be an array of numbers, not {type(value).__name__}{held}")
    return array


def load_saved_model(path: str | os.PathLike) -> tuple[keras.Model | None, str]:
    """Load a .keras model safely (no Lambda layers, no unknown classes, not compiled): (model or None, why)."""
    path = Path(path)
    if not path.is_file():
        return None, f"no model file: {path.name} was not found next to the notebook"
    if not zipfile.is_zipfile(path):
        return None, f"{path.name} is not a Keras .keras file (not a zip archive)"
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        return None, f"{path.name} has no readable model configuration ({type(exc).__name__})"
    # The compile configuration (loss, metrics, optimizer) is never deserialized (compile=False).
    unsafe = _unsafe_names({k: v for k, v in config.items() if k != "compile_config"})
    if refused := sorted(unsafe & REFUSED_LAYERS) or sorted(unsafe):
        what = "custom object" if unsafe.isdisjoint(REFUSED_LAYERS) else "layer that runs stored Python code"
        return None, (f"{path.name} holds {', '.join(refused)} ({what}): refused without loading it; "
                      "use built-in Keras layers only")
    try:
        with warnings.catch_warnings(), _no_registered_objects():  # a graded cell must write nothing to stderr
            warnings.simplefilter("ignore")
            model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        return None, f"{path.name} could not be loaded safely ({type(exc).__name__}: {reason})"
    if not isinstance(model, keras.Model):
        return None, f"{path.name} does not hold a Keras model"
    if foreign := not_keras(model):
        return None, (f"{path.name} loaded with code that is not Keras' own in it ({', '.join(foreign[:3])}): "
                      "refused; use built-in Keras layers only")
    return model, f"loaded {path.name}: {model.count_params():,} parameters"


@contextlib.contextmanager
def _no_registered_objects() -> Iterator[None]:
    """Keras' registries of custom objects (the global one and the current `custom_object_scope`) empty for the
    block, then as they were: what a notebook registered, even under a Keras name, cannot stand in for a class
    or function of the file it loads."""
    from keras.src.backend.common import global_state
    from keras.src.saving import object_registration

    registered, scope = dict(object_registration.GLOBAL_CUSTOM_OBJECTS), \
        global_state.get_global_attribute("custom_objects_scope_dict", {})
    object_registration.GLOBAL_CUSTOM_OBJECTS.clear()
    global_state.set_global_attribute("custom_objects_scope_dict", {})
    try:
        yield
    finally:
        object_registration.GLOBAL_CUSTOM_OBJECTS.update(registered)
        global_state.set_global_attribute("custom_objects_scope_dict", scope)


_KERAS_DIR = Path(keras.__file__).resolve().parent
# Where the code a loaded model may run comes from: Python's library and the installed packages (Keras,
# TensorFlow, NumPy...), never a cell or a file that a student wrote.
_LIBRARY_DIRS = tuple({Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib", "purelib",
                                                                                "platlib")})
_PLAIN = (type(None), bool, int, float, str, bytes)
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on every class made by a `class` statement or `type()`
_C_PARTS = (types.GetSetDescriptorType, types.MemberDescriptorType, types.WrapperDescriptorType,
            types.MethodDescriptorType, types.ClassMethodDescriptorType, types.BuiltinFunctionType)


@functools.lru_cache(maxsize=4096)
def _within(file: str | None, *dirs: Path) -> bool:
    """Is this file inside one of these folders?"""
    return bool(file) and any(Path(file).resolve().is_relative_to(d) for d in dirs)


def _library_code(function: Any, *dirs: Path, generated: bool = False) -> bool:
    """Was this function (or the one a method, static or class method, or property wraps) compiled from a file
    in these folders (the installed libraries by default)? `co_filename` is the compiler's: a notebook's
    functions carry their cell's. Functions written in C come from an installed library. `generated`: also
    those a library made from text ("<string>": a dataclass's `__init__`), for a class a library's module holds."""
    function = getattr(function, "__func__", None) or getattr(function, "fget", None) or function
    if isinstance(function, (types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodDescriptorType)):
        return True
    code = getattr(function, "__code__", None)
    return code is not None and (generated and code.co_filename.startswith("<")
                                 or not dirs and code.co_filename.startswith("<frozen ")  # the interpreter's own
                                 or _within(code.co_filename, *(dirs or _LIBRARY_DIRS)))


@functools.lru_cache(maxsize=4096)
def _library_class(cls: type, *dirs: Path) -> bool:
    """Is this class a library's (Keras' only, given Keras' folder): what its module and qualified name lead to,
    in a module of those folders or a built-in one, its own functions compiled there? (Any class can name any
    module in `__module__`.)"""
    if not cls.__flags__ & _HEAP_TYPE and not dirs:  # defined in C: no notebook can make one
        return True
    found: Any = sys.modules.get(cls.__module__)
    if found is None or not (cls.__module__ in sys.builtin_module_names and not dirs
                             or _within(getattr(found, "__file__", None), *(dirs or _LIBRARY_DIRS))):
        return False
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    if found is cls:
        return all(_library_code(v, *dirs, generated=True) for v in vars(cls).values()
                   if isinstance(v, (types.FunctionType, staticmethod, classmethod, property)))
    # Not where its name says (made in a function, or by C code): a library's only if it holds nothing but data,
    # C's own descriptors and functions compiled from the libraries' files, and its bases are libraries'.
    return all(type(v) in _PLAIN or isinstance(v, _C_PARTS) or isinstance(
        v, (types.FunctionType, staticmethod, classmethod, property)) and _library_code(v, *dirs)
        for v in vars(cls).values()) and all(_library_class(base, *dirs) for base in cls.__bases__)


def _look(value: Any) -> tuple[str | None, list[Any]]:
    """Is a value a library's (else what it is), and what it holds that its calls may call in turn: a bound
    method's object, a partial's function and arguments, a closure's cells, a container's items, an object's
    attributes."""
    if isinstance(value, types.MethodType):
        return (None if _library_code(value.__func__) else value.__qualname__), [value.__self__]
    if isinstance(value, types.BuiltinFunctionType):  # `obj.method` of a C type: its object may be anything
        held = value.__self__
        return None, [] if held is None or isinstance(held, types.ModuleType) else [held]
    if isinstance(value, types.FunctionType):
        cells = [cell.cell_contents for cell in value.__closure__ or () if cell != types.CellType()]
        return (None if _library_code(value) else value.__qualname__), [*cells, *vars(value).values()]
    if isinstance(value, type):
        return (None if _library_class(value) else value.__qualname__), []
    if isinstance(value, types.ModuleType):
        library = value.__spec__ is None or value.__spec__.origin in ("built-in", "frozen") or _within(
            getattr(value, "__file__", None), *_LIBRARY_DIRS)
        return (None if library else f"the module {value.__name__}"), []
    if not _library_class(type(value)):
        return f"{type(value).__qualname__} of {type(value).__module__}", []
    if isinstance(value, functools.partial):  # its function and arguments are not in its `__dict__`
        return None, [value.func, *value.args, *value.keywords.values()]
    if isinstance(value, dict):
        return None, list(value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return None, list(value)
    return None, list(getattr(value, "__dict__", {}).values())


# Objects `not_keras` looks at in one model at most: exercise 10's model holds about 14,000, exercise 9's 1,800.
_LOOKS = 300_000


def not_keras(model: keras.Model) -> list[str]:
    """What in a model is not Keras' own: a layer's or operation's class, or anything a layer holds, however
    deep (a function such as its activation, a bound method's object, a closure's cells, an object such as its
    dtype policy), whose class or code is not a library's, as "where (what)"; an empty list when all is."""
    parts = [model, *(part for part in _operations(model) if part is not None)]
    found = [f"{part.name} ({type(part).__qualname__} of {type(part).__module__})" for part in parts
             if not _library_class(type(part), _KERAS_DIR)]
    seen = {id(part) for part in parts}
    stack = [(f"{part.name}.{key}", value) for part in parts for key, value in vars(part).items()]
    looks = 0
    while stack and len(found) < 10:
        where, value = stack.pop()
        if type(value) in _PLAIN or id(value) in seen:
            continue
        seen.add(id(value))
        looks += 1
        if looks > _LOOKS:
            return [*found, f"more than {_LOOKS:,} objects to look at"]
        why, held = _look(value)
        if why:
            found.append(f"{where} ({why})")
        stack += [(where, item) for item in held]
    return found


def _operations(model: Any) -> Iterator[Any]:
    """Every layer and operation of a model, nested models' included."""
    for part in getattr(model, "operations", None) or getattr(model, "layers", None) or []:
        yield part
        yield from _operations(part)


def _unsafe_names(config: Any) -> set[str]:
    """Classes and functions of a serialized Keras configuration that are not Keras' own, or refused."""
    found: set[str] = set()
    if isinstance(config, list):
        return found.union(*(_unsafe_names(v) for v in config))
    if not isinstance(config, dict):
        return found
    name, module = config.get("class_name"), config.get("module")
    if isinstance(name, str):
        keras_module = isinstance(module, str) and (module == "keras" or module.startswith("keras."))
        if module == "builtins" and name == "function":  # a function: Keras' own have no package
            if ">" in str(config.get("config")):
                found.add(str(config.get("config")))
        elif name not in _DATA_MARKERS and (not keras_module or name in REFUSED_LAYERS):
            found.add(str(config.get("registered_name") or name))
    return found.union(*(_unsafe_names(v) for v in config.values()))


def from_scratch_problems(model: keras.Model, max_params: int = MAX_PARAMS) -> list[str]:
    """Why a model is not a from-scratch MNIST CNN made of Keras layers (an empty list if it is)."""
    problems = []
    layers = list(all_layers(model))
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or shape[1:] != (28, 28, 1):
        problems.append(f"input shape {model.input_shape}: expected (None, 28, 28, 1)")
    if tuple(model.output_shape)[1:] != (10,):
        problems.append(f"output shape {model.output_shape}: expected (None, 10)")
    if not any(isinstance(layer, keras.layers.Conv2D) for layer in layers):
        problems.append("no Conv2D layer: this is not a convolutional network")
    foreign = sorted({type(layer).__name__ for layer in layers
                      if not type(layer).__module__.startswith("keras.")})
    if foreign:
        problems.append(f"layers that are not Keras layers: {', '.join(foreign)}")
    if code := sorted({type(layer).__name__ for layer in layers} & REFUSED_LAYERS):
        problems.append(f"{', '.join(code)} layers run arbitrary Python code: the grader refuses them")
    pretrained = sorted({layer.name for layer in layers
                         if isinstance(layer, keras.Model) and APPLICATION_NAMES.match(layer.name)})
    if pretrained:
        problems.append(f"parts named like keras.applications models: {', '.join(pretrained)}")
    if model.count_params() > max_params:
        problems.append(f"{model.count_params():,} parameters: more than {max_params:,}")
    return problems


def _dotted(node: ast.AST) -> str:
    """The dotted name of an attribute chain (`keras.applications.ResNet50` -> that string), else ""."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _pretrained_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in PRETRAINED_MODULES)


def pretrained_uses(cells: Iterable[str]) -> list[str]:
    """Where code cells import or use a pretrained network (model-zoo imports, `applications`, `from_preset`)."""
    found = []
    for number, code in enumerate(cells, start=1):
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue  # a cell that does not parse never ran
        for node in ast.walk(tree):
            where = f"cell {number}, line {getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                found += [f"{where}: import {a.name}" for a in node.names if _pretrained_module(a.name)]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
                if _pretrained_module(node.module) or any(_pretrained_module(n) for n in names):
                    found.append(f"{where}: from {node.module} import {', '.join(a.name for a in node.names)}")
            elif isinstance(node, ast.Attribute) and node.attr in PRETRAINED_ATTRIBUTES:
                found.append(f"{where}: {_dotted(node) or '...' + '.' + node.attr}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
                found.append(f"{where}: __import__(...)")
    return found


def fingerprint(model: keras.Model) -> str:
    """SHA-256 of a model's architecture (its JSON configuration) and of every weight."""
    h = hashlib.sha256(model.to_json().encode())
    for weight in model.get_weights():
        h.update(str((weight.dtype, weight.shape)).encode() + np.ascontiguousarray(weight).tobytes())
    return h.hexdigest()


def _scorer() -> Callable[..., float]:
    """`accuracy`, its record of scores kept in this closure: a module's dictionary is one that a notebook's
    cell can fill in (`scores[key] = 1.0`) without assigning any attribute."""
    scored: dict[tuple[str, str], float] = {}  # (model fingerprint, images and labels digest) -> accuracy

    def accuracy(model: keras.Model, X: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
        """Fraction of the images whose highest-scoring class is the label (once per model and data in a process
        for a model all of Keras' own code; any other, which could say what it likes, at every call)."""
        y = np.asarray(y)
        data = hashlib.sha256(str((X.shape, X.dtype, y.shape, y.dtype)).encode())
        data.update(np.ascontiguousarray(X).data)
        data.update(np.ascontiguousarray(y).data)
        key = (fingerprint(model), data.hexdigest())
        if key in scored:
            return scored[key]
        with warnings.catch_warnings():  # a graded cell must write nothing to stderr
            warnings.simplefilter("ignore")
            scores = np.concatenate([keras.ops.convert_to_numpy(model.predict_on_batch(X[i:i + batch_size]))
                                     for i in range(0, len(X), batch_size)])
        share = float(np.mean(scores.argmax(axis=1) == y))
        if isinstance(model, keras.Model) and not not_keras(model):
            scored[key] = share
        return share

    return accuracy


accuracy = _scorer()
