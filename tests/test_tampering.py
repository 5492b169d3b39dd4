"""autograder/tampering.py: student code that could change what the tests see is found by reading it.

Each case puts one piece of code in place of exercise 2's first answer cell (the notebook as the grader
sees it, locked cells restored) and checks what is found; the course's own solutions must give nothing.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from autograder.tampering import findings, imported, reads, top_level_names

REPO = Path(__file__).resolve().parents[1]
ANSWER = "solution_conv_output_size"


def code_cells(nb) -> list[tuple[str, bool, str]]:
    """(name, locked, source) of each code cell, as grading.tampering_findings passes them."""
    meta = lambda c: c.metadata.get("nbgrader", {})
    return [(meta(c).get("grade_id") or f"#{i + 1}", bool(meta(c).get("locked")), c.source)
            for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def with_answer(code: str) -> list[tuple[str, bool, str]]:
    """Exercise 2's cells with `code` as the first answer."""
    cells = code_cells(nbformat.read(REPO / "solutions" / "ex02_params_memory" / "ex02_params_memory.ipynb",
                                     as_version=4))
    return [(name, locked, code if name == ANSWER else source) for name, locked, source in cells]


@pytest.mark.parametrize("source", sorted((REPO / "solutions").glob("*/*.ipynb")), ids=lambda p: p.parent.name)
def test_the_course_solutions_give_no_finding(source):
    """Do the solutions, and their exploration cells that reuse the tests' variable names, pass unflagged?"""
    assert findings(code_cells(nbformat.read(source, as_version=4))) == []


ATTACKS = {
    "exactly = lambda value, expected: True": "rebinds `exactly`",
    "def exactly(value, expected):\n    return True": "rebinds `exactly`",
    "(exactly := (lambda *a: True))": "rebinds `exactly`",
    "for exactly in [lambda *a: True]:\n    pass": "rebinds `exactly`",
    "import operator as exactly": "rebinds `exactly`",
    "del exactly": "deletes `exactly`",
    "def conv_output_size(n, kernel, stride, padding='same'):\n    global exactly\n    exactly = len\n    return 0":
        "declares `global exactly`",
    "import math\nmath.ceil = lambda x: 0": "assigns `math.ceil`",
    "import numpy as np\ndef f():\n    np.allclose = lambda *a, **k: True\nf()": "assigns `np.allclose`",
    "from keras import Model\nModel.predict = None": "assigns `Model.predict`",
    "import keras\nkeras.Model.predict, x = None, 1": "assigns `keras.Model.predict`",
    "exactly.__code__ = (lambda value, expected: True).__code__": "assigns `exactly.__code__`",
    "import numpy as np\ndef f():\n    def g():\n        np = 0\n    np.allclose = len\nf()": "assigns `np.allclose`",
    "import numpy as np\ndef f():\n    [np for np in range(2)]\n    np.allclose = len\nf()": "assigns `np.allclose`",
    "exec('exac' + 'tly = len')": "uses `exec`",
    "globals()['exactly'] = len": "uses `globals`",
    "import math\nsetattr(math, 'ceil', abs)": "uses `setattr`",
    "import math\nmath.__dict__['ceil'] = abs": "uses the attribute `__dict__`",
    "get_ipython().input_transformers_post.append(lambda lines: [])": "uses `get_ipython`",
    "%load_ext something": "uses `get_ipython`",
    "!echo hello": "uses `get_ipython`",
    "import sys\nsys.settrace(lambda *a: None)": "uses `sys.settrace`",
    "import sys as s\ns.modules['math'] = None": "uses `s.modules`",
    "from sys import _getframe": "imports `_getframe` from `sys`",
    "import builtins": "imports `builtins`",
    "from unittest import mock": "imports `unittest`",
    "import importlib.util": "imports `importlib.util`",
    "import numpy as np\ny = np.zeros(3)\ny.flags.writeable = True": "changes an array's flags",
    "import numpy as np\ny = np.zeros(3)\ny.base.flags['WRITEABLE'] = True": "changes an array's flags",
    "import numpy as np\nnp.zeros(3).setflags(write=True)": "uses `setflags`",
    # a built-in that the assignment's code reads (`exactly` compares with `type`, `len`, `all`)
    "def type(x):\n    return int": "rebinds `type`, which the assignment's code reads later (a built-in)",
    "from numpy import all": "rebinds `all`, which the assignment's code reads later (a built-in)",
    "def f():\n    global len\n    len = abs\nf()": "declares `global len` in a function",
    "from numpy import *": "imports `*` from `numpy`",
    # the running test's own code, and with it the values it expects
    "def conv_output_size(*a):\n    return In[-1]": "reads `In`, the kernel's record of the cells' code",
    "x = _ih[-1]": "reads `_ih`",
    "import __main__\nx = __main__.In": "imports `__main__`",
    "import traceback\nx = traceback.extract_stack": "imports `traceback`",
    "import linecache": "imports `linecache`",
    "import os\nx = os.sys": "uses `os.sys`, the module `sys`",
    "import warnings\nwarnings.warn('x', stacklevel=2)": "passes `stacklevel=`",
    "import logging\nlogging.warning('x', stack_info=True)": "passes `stack_info=`",
    "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    t = e.__traceback__": "uses the attribute `__traceback__`",
    "def handler(signum, frame):\n    return frame.f_code.co_consts": "uses the attribute `f_code`",
    "class Raw:\n    def __init__(self, address):\n        self.__array_interface__ = {'data': (address, False)}":
        "uses the attribute `__array_interface__`",  # numpy reads or writes any address of the process
    "class Raw:\n    __array_interface__ = {'data': (0, False)}": "names the attribute `__array_interface__`",
    "Raw = type('Raw', (), {'__array_interface__': {}})": "names the attribute `__array_interface__`",
    # a module or class reached under another name
    "m = math\nm.ceil = abs": "assigns `m.ceil` (`m` is bound to something imported or the assignment's)",
    "def f(m):\n    m.ceil = abs\nf(math)": "uses the module `math` itself as a value",
    "[math][0].ceil = abs": "assigns `[math][0].ceil` (an attribute of `math`, which is imported)",
    "from keras import Model\nfor M in [Model]:\n    M.predict = None": "assigns `M.predict` (`M` is bound to",
    "x = getattr(math, 'ce' + 'il')": "reads an attribute by a computed name (`getattr`)",
    "x = getattr(exactly, '__globals__')": "reads an attribute by `__globals__` (`getattr`)",
    "import operator\nf = operator.attrgetter('f_back')": "reads an attribute by `f_back` (`operator.attrgetter`)",
    # the kernel as another module's attribute: these two blanked every later cell, tests included (15 of 15)
    "import ipywidgets\nipywidgets.get_ipython().input_transformers_post.append(lambda lines: ['pass'])":
        "uses `ipywidgets.get_ipython` (the kernel itself)",
    "from matplotlib_inline.backend_inline import get_ipython as g": "imports `get_ipython` from `matplotlib_inline",
    # a string that becomes code or an object: `pydoc.locate('builtins.exec')` rebound `exactly` (14 of 15)
    "import pydoc\npydoc.locate('builtins.exec')('exactly = len')": "imports `pydoc`",
    "import timeit\ntimeit.timeit('import numpy; numpy.allclose = max', number=1)": "imports `timeit`",
    "from jinja2 import Template": "imports `jinja2`",
    "import numpy as np\nx = np.load('answer.npy', allow_pickle=True)": "passes `allow_pickle=True`",
    "import keras\nm = keras.saving.load_model('m.keras', safe_mode=False)": "passes `safe_mode=False`",
    "import keras\nkeras.config.enable_unsafe_deserialization()": "uses the attribute `enable_unsafe_deserialization`",
    # a template that reads attributes: "{0.__globals__[_ih]}" gave the running test's code (5 of 15, as `peek`)
    "def f():\n    pass\nx = '{0.__globals__[_ih]}'.format(f)": "names the attribute `__globals__`",
    "x = ('{0.__glo' + 'bals__}').format(f)": "formats a template that is not written out",
    "import string\nx = string.Formatter().get_field(name, (f,), {})": "formats a template that is not written out",
    # where a test's code can be read from: the stack's files and lines, a line by its file, the failed cell's
    "import faulthandler\nfaulthandler.dump_traceback(open('stack.txt', 'w'))": "imports `faulthandler`",
    "import warnings\nline = warnings.formatwarning('', Warning, name, 3)": "uses the attribute `formatwarning`",
    "import sys\ntb = sys.last_traceback": "uses `sys.last_traceback`",
    # a class or module reached through what a call returns, or held by one's own class
    "import keras\ntype(keras.Sequential()).predict = None": "assigns `type(keras.Sequential()).predict`",
    "import keras\ndef g():\n    return keras.Model\ng().predict = None": "on what `g(...)` returns",
    "(lambda: math)().ceil = abs": "on what `lambda(...)` returns",
    "class A:\n    m = math\nA.m.ceil = abs": "assigns `A.m.ceil` (`A` is bound to something imported",
    # a prompt on the second line: IPython strips `In [1]: ` from every line, so what reads as an annotation of
    # `In[1]` runs as an assignment (`np.allclose = ...` went unflagged once cells were read as written)
    "In = {}\nIn [1]: exactly = lambda value, expected: True": "rebinds `exactly`",
    "In = {}\nIn [1]: math.ceil = abs": "assigns `math.ceil`",
    # the kernel's machinery from objects a cell holds: each of the first three took 15 of 15 points, answers all 0
    "from ipywidgets.widgets.widget_output import InteractiveShell\n"
    "InteractiveShell.instance().input_transformers_post.append(lambda lines: ['pass'])":
        "imports `InteractiveShell` from `ipywidgets.widgets.widget_output`",
    "def forge(stream):\n    stream.session.send = lambda *a, **k: None\nimport sys\nforge(sys.stdout)":
        "uses the attribute `session`",
    "import comm\ncomm.create_comm().kernel.shell.events.register('pre_run_cell', print)": "imports `comm`",
    "import matplotlib_inline.backend_inline as inline\nshell = inline.InlineBackend.instance().shell":
        "uses the attribute `InlineBackend`",
    "import threading\nstreams = [t.shell_stream for t in threading.enumerate()]": "uses the attribute `shell_stream`",
    "import asyncio\nstacks = [t.get_stack() for t in asyncio.all_tasks()]": "imports `asyncio`",
    "import operator\nsend = operator.attrgetter('session.send')": "reads an attribute by `session.send`",
    # what a library's class or module may be behind: a parameter, an item, what a call returned (each an alias
    # the reader cannot follow), and a method of one's own class given another object as its `self`
    "import keras\ndef f(c):\n    c.predict = None\nf(keras.Model)": "assigns `c.predict` on an object not known",
    "import keras\nl = []\nl.append(keras.Model)\nl[0].predict = None": "assigns `l[0].predict` on an object not",
    "import keras\nm = next(iter([keras.Model]))\nm.predict = None": "assigns `m.predict` on an object not known",
    "import keras\nclass A:\n    def f(self):\n        self.predict = None\nA.f(keras.Model)":
        "uses `A.f` through its class",
    "import keras\nclass A:\n    def f(self):\n        self.predict = None\nlist(map(A.f, [keras.Model]))":
        "uses `A.f` through its class",
    # the C half of a listed module, or another private one
    "import _ctypes\nx = _ctypes.PyObj_FromPtr(id(len))": "imports `_ctypes`, a private module",
    "from _pickle import loads": "imports `_pickle`, a private module",
    # an item of a library's or the assignment's table (the tests' data were swapped this way, and a model's activation)
    "from dcv import data\ndata.SHA256['mnist'] = '0' * 64": "assigns an item of `data.SHA256` (`data` is imported",
    "import keras\nkeras.src.activations.ALL_OBJECTS_DICT['softmax'], x = abs, 1": "assigns an item of `keras.src",
    "import dcv.data\ndel dcv.data._SOURCES['mnist']": "deletes an item of `dcv.data._SOURCES` (`dcv` is",
    # an attribute as the target of `for`, `with` or a comprehension is assigned too
    "for math.ceil in [abs]:\n    pass": "assigns `math.ceil` (an attribute of `math`",
    "[0 for math.ceil in [abs]]": "assigns `math.ceil` (an attribute of `math`",
    "with open('f') as math.ceil:\n    pass": "assigns `math.ceil` (an attribute of `math`",
    # in every notebook's namespace, no import needed: the first took 15 of 15 points, answers all 0
    "exit._ip.input_transformers_post.append(lambda lines: ['pass'])": "uses the attribute `_ip`",
    "__builtin__.type = lambda x: int": "uses `__builtin__`",
    "import sys\ntext = '{0.session}'.format(sys.stdout)": "names the attribute `session`",
    # a module the notebook writes, its code out of the reader's sight, imported once `import` looks where it is
    # (a kernel's own folder is not on its `sys.path`: with it there, this took 14 of 15 points, answers all 0)
    "import sys\nsys.path.insert(0, '')\nimport helper": "uses `sys.path`",
    "from sys import path\npath.append('.')": "imports `path` from `sys`",
    "import site\nsite.addsitedir('.')": "imports `site`",
    "import pytest\npytest.MonkeyPatch().syspath_prepend('.')": "imports `pytest`",
    "import pkg_resources\npkg_resources.working_set.add_entry('.')": "imports `pkg_resources`",
    # code as bytes or text, or any callable named by a dotted string
    "from keras.src.utils.python_utils import func_load": "imports `func_load` from `keras.src.utils.python_utils`",
    "import keras\nf = keras.src.utils.python_utils.func_load(code)": "uses `keras.src.utils.python_utils.func_load`",
    "from PIL import ImageMath\nImageMath.unsafe_eval('exactly')": "uses `ImageMath.unsafe_eval`",
    "import yaml\nyaml.unsafe_load(text)": "imports `yaml`",
    "import logging.config\nlogging.config.dictConfig({})": "imports `logging.config`",
    "from logging import config\nconfig.dictConfig({})": "imports `logging.config`",
    "import logging\nlogging.config.dictConfig({'handlers': {'h': {'()': 'runpy.run_path', 'path_name': 'x.py'}}})":
        "uses `logging.config`",
    # patched or loaded by a dotted name; native code: a `CDLL` from NumPy rewrote `exactly` (14 of 15, answers all 0)
    "import wrapt\nwrapt.wrap_function_wrapper('__main__', 'exactly', lambda w, i, a, k: True)": "imports `wrapt`",
    "from importlib_metadata import EntryPoint\nrun = EntryPoint('x', 'builtins:exec', 'g').load()":
        "imports `importlib_metadata`",
    "import numpy as np\nlibc = np.ctypeslib.load_library('libc.so.6', '/lib/x86_64-linux-gnu')\n"
    "libc.memmove(np.ctypeslib.c_intp(id(exactly) + 48), np.ctypeslib.c_intp(id(len) + 48), np.ctypeslib.c_intp(8))":
        "uses `np.ctypeslib`",
    "from numpy.ctypeslib import load_library": "imports `numpy.ctypeslib.load_library`",
    "from numpy import ctypeslib": "imports `numpy.ctypeslib`",
    "import tensorflow as tf\ntf.load_op_library('./op.so')": "uses `tf.load_op_library`",
    "import h5py\nh5py.h5pl.append(b'.')": "uses `h5py.h5pl`",
    # an array over any address: with `id`, the same 8 bytes of `exactly` rewritten (14 of 15, answers all 0)
    "import numpy as np\nfrom numpy.lib.stride_tricks import as_strided\nc = np.zeros(1, np.uint64)\n"
    "as_strided(c, (2,), (id(exactly) + 48 - np.lib.array_utils.byte_bounds(c)[0],))[1] = 0":
        "imports `as_strided` from `numpy.lib.stride_tricks`",
    "import numpy as np\nstart = np.lib.array_utils.byte_bounds(np.zeros(1))[0]":
        "uses `np.lib.array_utils.byte_bounds`",
    "import numpy as np\nv = np.lib.stride_tricks.as_strided(np.zeros(1), (2,), (8,))":
        "uses `np.lib.stride_tricks.as_strided`",
    # `sys` as another module's `_sys` (345 modules hold one): an audit hook that kept each compiled cell's source
    # answered with the values the running test expected (5 of 15, as `peek`), unflagged
    "import collections\nsources = []\ncollections._sys.addaudithook(lambda e, a: sources.append(a))":
        "uses `collections._sys`, the module `_sys`",
    "import collections\nhook = collections._sys.addaudithook": "uses `collections._sys.addaudithook`",
    "def f(m):\n    return m.last_traceback": "uses `m.last_traceback`",
    "import keras\nx = keras.src.utils.python_utils._builtins": "the module `_builtins`",
    "import operator\nget = operator.attrgetter('_sys')": "reads an attribute by `_sys`",
    "def make(t):\n    return t.CodeType(0, 0, 0, 0, 0, 0, b'', (), (), (), '', '', '', 0, b'', b'')":
        "uses the attribute `CodeType`",
}


@pytest.mark.parametrize("code", ATTACKS)
def test_each_way_to_reach_the_tests_is_found(code):
    """Is each way to change what the tests see named, on the cell that does it?"""
    found = findings(with_answer(code))
    assert any(line.startswith(f"cell {ANSWER} ") and ATTACKS[code] in line for line in found), found


HARMLESS = [
    "def conv_output_size(n, kernel, stride, padding='same'):\n    exactly = 3  # a local name\n    return exactly",
    "def conv_output_size(math, kernel, stride, padding='same'):\n    math = 1  # a parameter\n    return math",
    # attributes of the notebook's own objects: a method's `self`, its own class, an instance of it
    "class Box:\n    def __init__(self, size):\n        self.size = size\n    def grow(self):\n"
    "        Box.count = 1\n        self.size += 1\nbox = Box(2)\nbox.size = 3\nbox.grow()",
    "import keras\nclass Stop(keras.callbacks.Callback):\n    def on_epoch_end(self, epoch, logs=None):\n"
    "        self.model.stop_training = True\n    def __init__(self):\n        keras.callbacks.Callback.__init__(self)",
    "import keras\nbase = keras.Sequential()\nbase.trainable = False\n"
    "for layer in base.layers:\n    layer.trainable = True",
    "class Box:\n    pass\nbox = Box()\nbox.size = 3",
    "import sys\nprint('note', file=sys.stderr)",
    "import os\nos.environ['X'] = '1'",
    "import matplotlib.pyplot as plt\nplt.rcParams['figure.figsize'] = (4, 3)",
    "import numpy as np\nX = np.zeros((2, 2))\nprint(X.flags.writeable, X.flags['C_CONTIGUOUS'])  # reading flags",
    "def conv_output_size(:",  # not Python: it cannot run either
    "import warnings\nwarnings.filterwarnings('ignore')",
    "import signal\nprint(signal.SIGKILL)",
    "from scipy import signal\nsmooth = signal.convolve2d",
    "for _i in range(3):\n    print(_i)",
    "import numpy as np\nx = getattr(np, 'float32')\nprint(isinstance(np.zeros(2), np.ndarray))",
    "def freeze(model):\n    for layer in model.layers:\n        layer.trainable = False",
    "import keras\nbase = keras.Sequential()\nbase.trainable = False",
    "import keras\nmodel = keras.Sequential()\nmodel.compile(loss='mse')\nimport re\nwords = re.compile('[a-z]+')",
    "n = 1930\nprint('{:,} parameters'.format(n), f'{n / 1e3:.1f}k {n!r}')",
    "import numpy as np\nx = np.load('answer.npy', allow_pickle=False)",
    "import keras\nmodel = keras.Sequential([keras.layers.Dense(2, name='d')])\nmodel.get_layer('d').trainable = False",
    "class Box:\n    size = 2\nBox.size = 3",
    "def conv_output_size(n, kernel, stride, padding='same'):\n    \"\"\"Size of the output, as in the chapter.\"\"\"\n"
    "    return 0",
    "from __future__ import annotations\nimport os\nfrom matplotlib import rcParams\n"
    "os.environ['X'] = '1'\nrcParams['lines.linewidth'] = 2\n"
    "import numpy as np\nX = np.zeros(3)\nX[0] = 1\nd = {}\nd['k'] = X",
    # the kernel's attribute names as plain words: one's own variables, and prose
    "session = instance = shell = 3\nprint('for instance, a shell session; a comm link')",
    # a file written and read back as data; one's own `path` and `config`; `logging` for messages
    "import os\npath = os.path.join('.', 'notes.txt')\nwith open(path, 'w') as f:\n    f.write('import x')",
    "import logging\nconfig = {'a': 1}\nlogging.getLogger('x').setLevel(logging.INFO)\nmodel_config = config",
    "import os\nimport numpy as np\nfolder = os.path.dirname(os.path.abspath('x'))\nnames = np.sort(['b', 'a'])",
]


@pytest.mark.parametrize("code", HARMLESS)
def test_ordinary_code_is_not_flagged(code):
    """Are a local variable, a parameter's attribute, one's own objects, stderr, a setting, a module's constants
    and a layer's `trainable` left alone?"""
    assert findings(with_answer(code)) == []


def test_a_name_bound_before_the_assignment_binds_it_is_not_flagged():
    """Binding a name the assignment's code binds afterwards (e.g. exercise 10's DATA) changes nothing."""
    cells = [("#1", False, "DATA = 'mine'"), ("setup", True, "DATA = 'fashion'\nimport numpy as np"),
             ("#3", False, "np = None"), ("test", True, "assert DATA and np")]
    assert findings(cells) == ["cell #3 rebinds `np`, which the assignment's code defines and reads later"]


def test_names_read_only_by_later_exploration_are_not_flagged():
    """A test's loop variable, reused by a later cell of the student's, is not read by any locked cell."""
    cells = [("test", True, "for ax in [1, 2]:\n    print(ax)"), ("#2", False, "ax = 3"),
             ("test2", True, "ax = 0\nprint(ax)")]
    assert findings(cells) == []


def test_reads_and_bindings():
    """What a cell binds, reads before binding, reads from its functions, and imports."""
    tree = __import__("ast").parse("import numpy as np\nfrom dcv import grader as g\nx = y + 1\n"
                                   "for i in range(x):\n    z = i\ndef f(a):\n    return a + w\n"
                                   "[k for k in v]")
    assert top_level_names(tree) == {"np": "import", "g": "import", "x": "=", "i": "=", "z": "=", "f": "def"}
    early, later = reads(tree)
    assert early == {"y", "range", "v"} and later == {"w"}
    assert imported(tree) == {"np": "numpy", "g": "dcv.grader"}


def test_code_too_large_or_too_deep_to_read_is_flagged_not_read():
    """Reading takes the grader about 10 s per MB, outside the sandbox's limits, and Python's parser gives
    up on deep nesting: is such a cell flagged for review in a second, while the notebook's other cells are
    still read? The grader's CPU time is what is bounded (0.6 s on an AVX-512 EPYC core): the wall time
    also counts the waits for a core, and took 14 s in a CI run on a host throttled to a third of this one's
    speed, its cores shared by four processes."""
    import time

    big = "x = [" + ",".join(["[1]"] * 1_000_000) + "]"  # 4 MB: 40 s to read
    deep = "x = " + "+".join(["1"] * 100_000)            # RecursionError in ast.parse
    start = time.process_time()
    found = findings([("setup", True, "exactly = lambda a, b: a == b"), ("#2", False, big), ("#3", False, deep),
                      ("#4", False, "exactly = 1"), ("test", True, "assert exactly(1, 1)")])
    assert time.process_time() - start < 10
    assert found == ["cell #4 rebinds `exactly`, which the assignment's code defines and reads later",
                     "cell #2 was not read: 3,906 KB of code, past the 256 KB of a notebook's code that the "
                     "grader reads",
                     "cell #3 was not read: its code is nested too deeply for Python's parser"]


def test_text_ipython_fails_on_is_not_read_and_never_stops_grading():
    """`=%\"\"\"` makes IPython's transformer raise an IndexError (the kernel shows it and runs nothing): the
    reader, which raised it too, stopping that student's grading, now finds nothing in such a cell."""
    code = '=%"""'
    found = findings(with_answer(code))
    assert not any(line.startswith(f"cell {ANSWER} ") for line in found), found


def test_ipython_syntax_costs_the_grader_seconds_and_never_stops_grading():
    """IPython's transformer reads a whole cell again for each `%`/`!` line it rewrites, and gives up after 500
    (RuntimeError). 490 `!` lines in 205 KB took the grader 230 s of CPU, and 600 stopped the student's grading
    with "RuntimeError: Input transformation still changing after 500 iterations" at every run. Are both cells
    flagged unread within seconds, while a notebook's ordinary magics are still read?"""
    import time

    magics = "".join(f"a{i} = !ls\n" for i in range(490)) + "x = [" + ",".join(["1"] * 100_000) + "]\n"
    endless = "".join(f"a{i} = !true\n" for i in range(600))
    start = time.process_time()
    found = findings([("setup", True, "exactly = lambda a, b: a == b"), ("#2", False, "%matplotlib inline"),
                      ("#3", False, magics), ("#4", False, endless), ("test", True, "assert exactly(1, 1)")])
    assert time.process_time() - start < 10
    unread = "was not read: it is not Python as written, and IPython's transformer would read its"
    assert found[0] == ("cell #2 uses `get_ipython` (the kernel itself; IPython magics and `!` commands use it "
                        "too)"), found
    assert [line.split(" KB")[0] for line in found[1:]] == [f"cell #3 {unread} 200", f"cell #4 {unread} 8"], found
    assert "again for each of 490 lines of IPython syntax (`%`, `!`...), past what the grader gives it" in found[1]
    autocall = "".join("/f 1\n" for _ in range(300)) + "x = [" + ",".join(["1"] * 20_000) + "]\n"  # f(1): no `%`
    start = time.process_time()
    found = findings([("#1", False, autocall)])
    assert time.process_time() - start < 10 and found and "again for each of 300 lines" in found[0], found
