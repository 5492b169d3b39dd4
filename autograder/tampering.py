"""Student code that could change what the tests see, found by reading it (never by running it).

A notebook's tests run in the same Python process as the student's code, so that code could rebind
a helper the tests use (`exactly = lambda *a: True`), patch a library (`np.allclose = ...`), or hook
the kernel (`get_ipython()`, `sys.settrace`) and pass every test without answering anything. The
sandbox cannot stop that: it is all one process. The grader therefore reads each code cell that the
student wrote (every cell but the assignment's locked ones, which it has just restored), with `ast`
and outside the kernel, and lists what such code would need:

- rebinding a name that an earlier locked cell defined (`exactly`, `np`, `MODEL_PATH`...), or a built-in
  that a later one reads (`type`, `len`, `all`: `exactly` reads them), at top level, through `global`
  or a star import, or deleting it;
- assigning or deleting an attribute of an imported module or class, or of a name a locked cell
  defined (`np.allclose = ...`, `keras.Model.predict = ...`, `exactly.__code__ = ...`), also under
  another name (`m = math; m.ceil = ...`, `[math][0].ceil = ...`, a class of one's own that holds it:
  `class A: m = math`), or on what a plain call returns (`type(model).predict = ...`, `g().ceil = ...`:
  a class or module it returns), and using a module as a value (`f(math)`: a function could change it
  as its parameter);
- assigning or deleting an item of a table that is imported or the assignment's (`dcv.data.SHA256["mnist"] = ...`,
  `keras.src.activations.ALL_OBJECTS_DICT["softmax"] = ...`), but for `os.environ` and `rcParams`;
- assigning or deleting any other attribute, unless it is of the notebook's own objects (a method's `self`,
  a class the student's cells define, a name they bind only to such a class's instances) or one that
  ordinary code sets on a library's objects (`FREE_ATTRIBUTES`: `base.trainable = False`): an object held
  by a parameter, an item or what a call returned may be a library's class (`f(keras.Model)`,
  `l.append(keras.Model)`, `next(iter([keras.Model]))`), which no reading of names can follow; the same
  for an attribute as the target of `for`, `with ... as` or a comprehension (`for math.ceil in [abs]`),
  and for a method of one's own class called through the class (`A.f(keras.Model)`: its `self` is then
  the library's class);
- reading the code of the running test, which holds the values it expects: IPython's record of the
  cells (`In[-1]`, `_ih`), `__main__`, `traceback`, `linecache`, frames and code objects (`f_code`,
  `co_consts`, `__traceback__`), and `stacklevel=` or `stack_info=` (a warning's or a log's caller);
- the ways around reading code: `exec`, `eval`, `compile`, `__import__`, `setattr`, `delattr`,
  `getattr` or `operator.attrgetter` with a computed or reaching name, `globals`, `locals`, `vars`,
  `get_ipython`, IPython magics and shell escapes, these names also as another module's attribute or
  import (`ipywidgets.get_ipython`), attributes such as `__dict__`, `__globals__`, `__code__`,
  `__builtins__`, `__class__`, `__subclasses__`, also named in a string (`"{0.__globals__}".format(f)`
  reads it, and so does a template), a format template that is not written out, a module reached as
  another's attribute (`os.sys`, `collections._sys`: also with leading underscores or under another name,
  `builtin_mod`), and `sys`'s hooks and tables (`sys.settrace`, `sys.modules`, `sys._getframe`,
  `sys.last_traceback`...; the hooks on whatever holds them: `collections._sys.addaudithook` saw each
  test's source as IPython compiled it), and `CodeType` (a code object from raw bytecode);
- the kernel's machinery, reached from objects any cell holds: `sys.stdout.session` (which sends every message
  of the kernel: replacing its `send` made each failed test report success), a singleton's `instance()`
  (`InteractiveShell.instance()`, re-exported by `ipywidgets`; `InlineBackend.instance().shell`), the shell
  that `exit` and `quit` hold (`exit._ip`), IPython's `__builtin__` (the `builtins` module), a widget's
  `comm` and the `comm` module (`comm.create_comm().kernel`), a thread's `shell_stream` and `io_loop`, and
  `asyncio` (the tasks' stacks) and `debugpy`; these names are flagged as attributes and imports, not as
  one's own variables;
- making a read-only array writable (`x.flags.writeable = True`, `x.setflags(write=True)`): the data the
  tests read (e.g. `dcv.data.mnist_scaled()`, shared by every call in the kernel) are read-only;
- importing the interpreter's or the kernel's machinery (`builtins`, `gc`, `inspect`, `ctypes`,
  `importlib`, `IPython`, `types`, `unittest.mock`, `pickle`...), or a module that runs code given as
  text or bytes (`timeit`'s statements, `doctest`, `jinja2` and `mako` templates, Keras' `func_load`,
  Pillow's `unsafe_eval`), imports by a dotted name (`pydoc.locate`, `logging.config`), unpickles or
  builds any object (`joblib`, `shelve`, `dask`, `yaml`), or prints the stack's files and lines
  (`faulthandler`), and the arguments that make a loader run stored code (`allow_pickle=True`,
  `safe_mode=False`), or any private top-level module (`_ctypes`, `_pickle`, `_testcapi`, `_lsprof`: the C
  halves of listed modules, and more), `__future__` aside;
- changing where `import` looks (`sys.path`, `site`, `pytest`'s `syspath_prepend`, `pkg_resources`): a
  kernel's `sys.path` holds no folder it can write (autograder/zygote.py), so a module the notebook
  writes, whose code is not in its cells, cannot be imported otherwise;
- patching by a dotted name (`wrapt.wrap_function_wrapper("numpy", "allclose", ...)`), loading a callable
  by one (`importlib_metadata`'s entry points), running a file (`coverage`, `sphinx`, `alembic`), and
  loading native code (`np.ctypeslib.load_library` gives a `CDLL`, whose `memmove` rewrote `exactly`;
  `tf.load_op_library`, HDF5's `h5pl`), and an array over any address (`as_strided`, whose strides are
  never checked, and `byte_bounds`). The kernel's own memory as a file (`/proc/self/mem`) is out of
  reach: the kernel is not dumpable (the file is root's) and its /proc is read-only.

Processes the notebook starts (`os.system`, `subprocess`) are not listed: the kernel runs under a user
id that has just changed, so it is not "dumpable" and no process of that user can trace it or write
its memory, and a seccomp filter refuses connect(2) to the kernel and all it starts, so none can reach
its sockets (a process subscribed to its IOPub read each test's code as the kernel announced it).

A cell the grader cannot read is flagged the same way: one nested too deeply for Python's parser, one
past the first 256 KB of a notebook's student code (`READ_LIMIT`), or one whose IPython syntax would cost
IPython's transformer too much (`TRANSFORM_LIMIT`): reading is the grader's time, which no sandbox limit
bounds. A cell is read as IPython runs it: after IPython's clean-up (a prompt such as `In [1]: ` stripped
from its lines), a cell with no IPython syntax is parsed at once; only the others go through IPython's
transformer, which reads a whole cell again for each line it rewrites.

`findings(cells, locked)` returns one line per finding; grading records them as reasons and marks the
notebook's automatic grades for manual review (nbgrader's `needs_manual_grade`): the points stay as
the tests gave them until an instructor looks. A finding is a reason to look, not proof of cheating;
the course's own solutions give none (tests/test_tampering.py). Reading finds what it looks for: code
that reaches the tests by a way not listed passes unflagged.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterable
from typing import Any

# Callables that run or reach code by name, around what `ast` can read.
REACHING_CALLS = frozenset({"exec", "eval", "compile", "__import__", "setattr", "delattr", "globals", "locals",
                            "vars", "get_ipython", "breakpoint", "__builtins__",
                            "__builtin__",  # IPython's name for `builtins` in every notebook's namespace
                            # a function from marshalled bytes (Keras' `func_load`), Pillow's `eval` of text
                            "func_load", "unsafe_eval",
                            # a shared library loaded (its constructors run native code in the kernel)
                            "load_library", "load_op_library", "load_pluggable_device_library",
                            "register_filesystem_plugin",
                            # any address of the process as an array: `as_strided` never checks its bounds, and
                            # `byte_bounds` gives an array's address (with `id`, a function's code was rewritten)
                            "as_strided", "byte_bounds"})
# Callables that read an attribute named by a string, which `ast` sees only when it is written out.
BY_NAME = frozenset({"getattr", "attrgetter", "methodcaller"})
# Attributes that open a function, module or class from inside (their code, globals, namespace, types).
REACHING_ATTRIBUTES = frozenset({"__dict__", "__globals__", "__code__", "__builtins__", "__class__",
                                 "__subclasses__", "__closure__", "__func__", "__self__", "__defaults__",
                                 "__kwdefaults__", "__wrapped__", "__getattribute__", "__setattr__",
                                 "__delattr__", "__import__", "__loader__", "__spec__", "__mro__", "__bases__",
                                 "__base__", "f_globals", "f_locals", "f_back", "gi_frame", "tb_frame",
                                 "f_code", "f_lineno", "f_lasti", "f_trace", "cr_frame", "ag_frame", "gi_code",
                                 "cr_code", "ag_code", "__traceback__", "tb_next", "co_consts", "co_names", "co_code",
                                 "co_filename", "co_positions", "co_lines", "findCaller", "__array_interface__",
                                 "__array_struct__", "formatwarning", "enable_unsafe_deserialization",
                                 "CodeType"})  # a code object from raw bytecode (`types`, also as `x._types`)
# Attributes that hold the kernel's machinery, reached from objects any cell holds: `sys.stdout.session` signs and
# sends every message, the tests' results among them; a singleton's `instance()` (`InteractiveShell`'s,
# `InlineBackend`'s) and its `shell`; `exit._ip` and `quit._ip` (the shell, in every notebook's namespace); a
# widget's `comm` and its kernel; a thread's `shell_stream` (the tests' code comes in on it) and `io_loop`. Plain
# words: as names of one's own variables, or in a string's prose, they are not flagged (only as attributes,
# imports, and `.name` in a string).
KERNEL_ATTRIBUTES = frozenset({"session", "pub_thread", "shell", "shell_stream", "_shell_stream", "io_loop", "comm",
                               "instance", "_instance", "_ip", "InteractiveShell", "ZMQInteractiveShell",
                               "InlineBackend"})
# Attributes a notebook may assign on any object, its own or not (`base.trainable = False`, a callback's
# `self.model.stop_training = True`); any other assignment on an object not known to be the notebook's own is flagged.
FREE_ATTRIBUTES = frozenset({"trainable", "stop_training", "learning_rate"})
# Tables of a library that ordinary code writes items into (`os.environ["X"] = ...`, `plt.rcParams[...] = ...`);
# an item assigned in any other table that is imported or the assignment's is flagged (`data.SHA256[...] = ...`).
FREE_TABLES = frozenset({"environ", "rcParams"})
# Modules (and their submodules) that reach into the interpreter, the kernel, or code not written out.
REACHING_MODULES = frozenset({"builtins", "gc", "inspect", "ctypes", "cffi", "importlib", "IPython", "ipykernel",
                              "jupyter_client", "traitlets", "zmq", "types", "unittest", "code", "codeop", "dis",
                              "marshal", "pickle", "dill", "cloudpickle", "copyreg", "runpy", "pdb", "bdb",
                              "nbgrader", "nbformat", "__main__", "traceback", "linecache",
                              "tracemalloc", "trace", "cProfile", "profile", "cgitb", "pkgutil", "imp", "zipimport",
                              "stack_data", "executing", "pure_eval", "asttokens", "_pytest",
                              # code given as text or bytes, a dotted name imported, the stack's files and lines
                              "timeit", "doctest", "jinja2", "mako", "pydoc", "joblib", "shelve", "dask",
                              "distributed", "faulthandler", "yaml",
                              # where `import` looks (`site.addsitedir`, `pytest`'s `syspath_prepend`,
                              # `pkg_resources`' `working_set.add_entry`): a module the notebook wrote is out of sight
                              "site", "pytest", "pkg_resources", "setuptools", "distutils", "pip",
                              # a module's attribute patched by dotted name (`wrapt.wrap_function_wrapper`), a
                              # callable loaded by one (entry points), a file run (`coverage`, Sphinx's `conf.py`,
                              # `alembic`), methods built as text from given names (`attrs`)
                              "wrapt", "importlib_metadata", "coverage", "sphinx", "alembic", "attr", "attrs",
                              # the kernel's comms (`comm.create_comm().kernel`), its debugger, its event loop
                              "comm", "debugpy", "pydevd", "asyncio"})
# Submodules that call whatever a dotted name in their input names (`dictConfig`'s "()": "runpy.run_path").
# And where native code is loaded from a path: NumPy's `ctypeslib` (a `CDLL`: any C function on any address), HDF5's
# filter plugins.
REACHING_SUBMODULES = frozenset({"logging.config", "numpy.ctypeslib", "h5py.h5pl"})
# Modules reached as an attribute of another (`os.sys`, a library's `inspect`), under their names or another's
# (`builtin_mod`, IPython's), with or without leading underscores (`collections._sys`: 345 modules hold one).
REACHING_AS_ATTRIBUTES = frozenset({"sys", "builtins", "gc", "inspect", "ctypes", "importlib", "traceback",
                                    "linecache", "marshal", "pickle", "tf_inspect", "__main__", "ctypeslib", "h5pl",
                                    "builtin_mod", "bltns"})
# The kernel's record of what ran, the running test's code included: IPython's `In[-1]` is that test's source.
HISTORY = frozenset({"In", "Out", "_ih", "_oh", "_i", "_ii", "_iii", "_dh"})
# Keywords that ask for a caller's place in the code (`warnings.warn(..., stacklevel=2)` names the test's
# line, and its message shows the line's code; `logging`'s `stack_info` prints the stack with its code).
CALLER_KEYWORDS = frozenset({"stacklevel", "stack_info"})
# Keywords of loaders, with the one value that keeps them from running code stored in a file or bytes
# (`np.load(f, allow_pickle=True)` unpickles; `keras.saving.load_model(f, safe_mode=False)` runs a Lambda's code).
SAFE_KEYWORDS = {"allow_pickle": False, "safe_mode": True}
# Reaching callables that are also ordinary method names: `model.compile(...)` is Keras'.
METHOD_NAMES = frozenset({"compile"})
# Methods that read the attributes and items a template names (`"{0.__globals__}".format(f)`).
FORMATTING = frozenset({"format", "format_map", "vformat", "get_field"})
# Names every cell can read without binding them (`type`, `len`, `all`): a cell that rebinds one at top level
# changes it for the assignment's functions too (`def type(x): return int` makes `type(answer) is int` true).
BUILTINS = frozenset(dir(builtins)) - {"__doc__", "__name__", "__package__", "__loader__", "__spec__"}
# What of `sys` reaches other code (its frames, its imports, its hooks); `import sys` alone is common.
REACHING_SYS = frozenset({"settrace", "setprofile", "_getframe", "_current_frames", "modules", "meta_path",
                          "path_hooks", "path_importer_cache", "excepthook", "displayhook", "addaudithook",
                          "breakpointhook", "monitoring", "call_tracing", "last_traceback", "last_value",
                          "last_type", "last_exc",  # last_*: the last failed cell's traceback (a test's)
                          "path"})  # where `import` looks: the kernel's is only what it cannot write
# Of those, the words that other objects use too (`os.path`, a package's `modules`): flagged on `sys` only. Every other
# one is flagged on whatever holds it (`collections._sys.addaudithook` handed every test's source to a notebook).
SYS_WORDS = frozenset({"modules", "path", "monitoring"})


def _transform(source: str) -> str:
    """The cell as Python (IPython's magics and `!` escapes become `get_ipython()` calls)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _cleaned(source: str) -> tuple[str, bool]:
    """The cell as IPython runs it when it holds no IPython syntax, and whether it holds some: IPython's
    clean-up (prompts such as `In [1]: ` and `>>> ` stripped, indentation) and cell magics, as
    `transform_cell` does them, then one look for the syntax it rewrites (one tokenisation: linear)."""
    from IPython.core.inputtransformer2 import TransformerManager

    manager = TransformerManager()
    lines = (source if source.endswith("\n") else source + "\n").splitlines(keepends=True)
    for transform in manager.cleanup_transforms + manager.line_transforms:
        lines = transform(lines)
    changed, _ = manager.do_one_token_transform(lines)
    return "".join(lines), changed


# Lines IPython's transformer may rewrite, each costing it a reading of the whole cell: an escape first (`%`,
# `!`, `?`, and the autocall escapes `/f 1`, `,f a`, `;f a`), `= %magic` or `= !command`, or a `?` at the end.
IPYTHON_LINE = re.compile(r"^[ \t]*[%!?,;/]|=[ \t]*[%!]|\?[ \t]*(?:#.*)?$", re.MULTILINE)


def _transform_cost(source: str) -> int:
    """At most what IPython's transformer reads of a cell: all of it, once per line that may hold its syntax."""
    return len(source) * max(1, len(IPYTHON_LINE.findall(source)))


def _bound(targets: Iterable[ast.AST]) -> set[str]:
    """Names that assignment targets bind (a, (b, c), *d), not attributes or items."""
    names: set[str] = set()
    for target in targets:
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            names |= _bound(target.elts)
        elif isinstance(target, ast.Starred):
            names |= _bound([target.value])
    return names


def top_level_names(tree: ast.Module) -> dict[str, str]:
    """Names a cell binds at module level (not inside its functions or classes) -> how: import, def, =, del."""
    found: dict[str, str] = {}

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.update({alias.asname or alias.name.split(".")[0]: "import"
                              for alias in node.names if alias.name != "*"})
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found[node.name] = "def"
                continue  # what its body binds is local
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found.update(dict.fromkeys(_bound(targets), "="))
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                found.update(dict.fromkeys(_bound([node.target]), "="))
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                found.update(dict.fromkeys(_bound([i.optional_vars for i in node.items if i.optional_vars]), "="))
            elif isinstance(node, ast.Delete):
                found.update(dict.fromkeys(_bound(node.targets), "del"))
            elif isinstance(node, ast.Try):
                found.update({h.name: "=" for h in node.handlers if h.name})
                for handler in node.handlers:
                    visit(handler.body)
            for sub in ast.walk(node):  # (x := ...) anywhere in the statement
                if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                    found.setdefault(sub.target.id, "=")
            for field in ("body", "orelse", "finalbody"):  # the blocks of if, for, while, try, with
                block = getattr(node, field, None)
                if isinstance(block, list):
                    visit(block)

    visit(tree.body)
    return found


def _assignment_targets(node: ast.AST) -> list[ast.AST]:
    """What a statement assigns to or deletes: `=`, `+=`, `del`, and the targets of `for`, `with ... as` and
    comprehensions (`for math.ceil in [abs]: pass` assigns `math.ceil`)."""
    if isinstance(node, (ast.Assign, ast.Delete)):
        return node.targets
    if isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor, ast.comprehension)):
        return [node.target]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [item.optional_vars for item in node.items if item.optional_vars is not None]
    return []


def _last_name(node: ast.AST) -> str | None:
    """The last name of an attribute chain (`rcParams` in `plt.rcParams`, `environ` in `environ`)."""
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None


def _element_targets(target: ast.AST, kind: type[ast.AST]) -> list[Any]:
    """The targets of one kind (`ast.Attribute`, `ast.Subscript`) that an assignment target assigns: `a.b` or
    `t[k]` in `a.b = 1`, `a.b, t[k] = 1, 2`, `*a.b, = ...`."""
    if isinstance(target, kind):
        return [target]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [t for element in target.elts for t in _element_targets(element, kind)]
    if isinstance(target, ast.Starred):
        return _element_targets(target.value, kind)
    return []


def imported(tree: ast.AST) -> dict[str, str]:
    """Names that a cell's imports bind, anywhere in it -> the module each comes from."""
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update({a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0]
                          for a in node.names})
        elif isinstance(node, ast.ImportFrom):
            found.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names if a.name != "*"})
    return found


def _root(node: ast.AST) -> str | None:
    """The name an attribute or item chain starts from (`np` in np.linalg.norm, `a` in a.b[0].c)."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _locals_of(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """Names local to a function: its parameters and what its own body binds (minus `global` ones)."""
    args = function.args
    names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
    names |= {a.arg for a in (args.vararg, args.kwarg) if a}
    if isinstance(function, ast.Lambda):
        return names
    declared: set[str] = set()
    stack = list(ast.iter_child_nodes(function))
    while stack:  # its own body: not the functions and classes it defines, nor its comprehensions' variables
        node = stack.pop()
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            declared |= set(node.names)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            names |= _bound(node.targets if isinstance(node, ast.Assign) else [node.target])
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            names |= _bound([node.target])
        elif isinstance(node, ast.NamedExpr):
            names |= _bound([node.target])
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            names |= _bound([i.optional_vars for i in node.items if i.optional_vars])
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif not isinstance(node, (ast.Lambda, ast.comprehension)):
            stack.extend(ast.iter_child_nodes(node))
    return names - declared


def _scopes(tree: ast.AST, outer: frozenset[str] = frozenset(), inside: bool = False):
    """(node, names local to the functions around it, whether it is inside a function) for every node."""
    for child in ast.iter_child_nodes(tree):
        function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        local = outer | _locals_of(child) if function else outer
        yield child, local, inside
        yield from _scopes(child, frozenset(local), inside or function)


def _loads(node: ast.AST) -> set[str]:
    """Names an expression or statement reads when it runs (not inside the functions it defines, not the
    variables of its comprehensions)."""
    names, inner = set(), set()
    stack = [node]
    while stack:
        sub = stack.pop()
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            names.add(sub.id)
        elif isinstance(sub, ast.comprehension):
            inner |= _bound([sub.target])
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):  # its body runs later
            stack += [*sub.decorator_list, *getattr(sub, "bases", []),
                      *(getattr(sub.args, "defaults", []) if hasattr(sub, "args") else [])]
        elif isinstance(sub, ast.Lambda):
            stack += sub.args.defaults
        else:
            stack += ast.iter_child_nodes(sub)
    return names - inner


def reads(tree: ast.Module) -> tuple[set[str], set[str]]:
    """What a cell's code reads: (names its top level reads before binding them itself, names its
    functions read from the globals whenever they are called)."""
    early: set[str] = set()
    bound: set[str] = set()

    def run(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                early.update(_loads(node.value) - bound if node.value else set())
                bound.update(_bound(node.targets if isinstance(node, ast.Assign) else [node.target]))
            elif isinstance(node, ast.AugAssign):
                early.update((_loads(node.value) | _bound([node.target])) - bound)
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                early.update(_loads(node.iter) - bound)
                bound.update(_bound([node.target]))
                run(node.body)
                run(node.orelse)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    early.update(_loads(item.context_expr) - bound)
                    bound.update(_bound([item.optional_vars] if item.optional_vars else []))
                run(node.body)
            elif isinstance(node, (ast.If, ast.While)):
                early.update(_loads(node.test) - bound)
                run(node.body)
                run(node.orelse)
            elif isinstance(node, ast.Try):
                run(node.body)
                for handler in node.handlers:
                    early.update(_loads(handler.type) - bound if handler.type else set())
                    bound.update({handler.name} if handler.name else set())
                    run(handler.body)
                run(node.orelse)
                run(node.finalbody)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                early.update(_loads(node) - bound)
                if isinstance(node, ast.ClassDef):
                    run(node.body)
                bound.add(node.name)
            else:
                early.update(_loads(node) - bound)
                bound.update(top_level_names(ast.Module(body=[node], type_ignores=[])))

    run(tree.body)
    later = {node.id for node, local, inside in _scopes(tree)
             if inside and isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in local}
    return early, later


# Student code read per notebook, in characters. Reading takes about 9 s per MB (the grader's time, outside
# the sandbox's limits); a student's cells rarely hold 20 KB. Cells past it are not read, and flagged.
READ_LIMIT = 256 * 1024
# What IPython's transformer may read per notebook (`_transform_cost`, characters): it reads a whole cell again
# for each line of IPython syntax it rewrites, and gives up after 500 (RuntimeError); 490 `a = !ls` lines in a
# 205 KB cell took it 230 s. This budget is about 2 s; a cell past it is not read, and flagged.
TRANSFORM_LIMIT = 1_000_000


def _python(source: str) -> ast.Module | None:
    """The cell's syntax tree as IPython runs it when it holds no IPython syntax (`_cleaned`: a prompt such
    as `In [1]: ` on its first or second line is stripped from every line, which turns `In [1]: np.x = f`,
    an annotation as written, into an assignment); None when it holds some or is not Python; a RecursionError
    when it is nested too deeply for Python's parser to build a tree."""
    try:
        cleaned, ipython_syntax = _cleaned(source)
        return None if ipython_syntax else ast.parse(cleaned)
    except (RecursionError, MemoryError):
        raise
    except Exception:  # IPython's transformer fails on some text (an IndexError): the kernel cannot run it either
        return None


def _ipython(source: str) -> ast.Module | None:
    """The cell's syntax tree as IPython runs it, or None when it is not Python that way either, or IPython
    gives up on it (then it cannot run either)."""
    try:
        return ast.parse(_transform(source))
    except (RecursionError, MemoryError):
        raise
    except Exception:  # IPython's transformer fails on some text (an IndexError): the kernel cannot run it either
        return None


def _references(node: ast.AST | None) -> set[str]:
    """Names an expression hands on as they are (`m` in `m`, `(m, 1)`, `[m][0]`, `x if c else m`,
    `getattr(m, "a")`), not the results of other calls or the bodies of lambdas."""
    names: set[str] = set()
    stack = [node] if node is not None else []
    while stack:
        sub = stack.pop()
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            names.add(sub.id)
        elif isinstance(sub, ast.Call):
            if isinstance(sub.func, ast.Name) and sub.func.id == "getattr" and sub.args:
                stack.append(sub.args[0])
        elif not isinstance(sub, ast.Lambda):
            stack += ast.iter_child_nodes(sub)
    return names


def aliases_of(trees: Iterable[ast.AST], roots: set[str]) -> set[str]:
    """Names the student's code binds to a root as it is (`m = math`, `for m in [keras.Model]`, a parameter
    `m=math`; not one of its functions' own names): an attribute assigned through one is assigned on the root."""
    found: set[str] = set()
    for _ in range(4):  # an alias of an alias
        before = len(found)
        for tree in trees:
            for node, local, _ in _scopes(tree):
                pairs: list[tuple[list[ast.AST], ast.AST | None]] = []
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
                    pairs.append((node.targets if isinstance(node, ast.Assign) else [node.target], node.value))
                elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                    pairs.append(([node.target], node.iter))
                elif isinstance(node, (ast.With, ast.AsyncWith)):
                    pairs += [([i.optional_vars], i.context_expr) for i in node.items if i.optional_vars]
                elif isinstance(node, ast.ClassDef):  # a class whose attribute holds a root: `A.t.x = ...`
                    pairs += [([ast.Name(node.name)], s.value) for s in node.body
                              if isinstance(s, (ast.Assign, ast.AnnAssign)) and s.value is not None]
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    args = node.args
                    positional = [*args.posonlyargs, *args.args]
                    pairs += [([ast.Name(a.arg)], d) for a, d in zip(positional[len(positional) - len(args.defaults):],
                                                                    args.defaults)]
                    pairs += [([ast.Name(a.arg)], d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d]
                for targets, value in pairs:
                    if _references(value) & ((roots - local) | found):
                        found |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        if len(found) == before:
            return found
    return found


def _target_references(target: ast.Attribute) -> set[str]:
    """The names an attribute target's object comes from: `np` in `np.a.b`, `m` in `[m][0].a`."""
    node: ast.AST = target.value
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return {node.id} if isinstance(node, ast.Name) else _references(node)


def _plain_method(node: ast.AST) -> bool:
    """Is this a function defined in a class body that takes its object first (not a static or class method)?"""
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and bool(
        [*node.args.posonlyargs, *node.args.args]) and not any(
        isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod") for d in node.decorator_list)


def own_objects(trees: Iterable[ast.AST]) -> dict[str, set[str]]:
    """The names that only ever hold the notebook's own classes or their instances (bound by `class A` or
    `a = A(...)` and in no other way, in any student cell) -> the methods of each that take their object first."""
    trees = list(trees)
    classes = {node.name: {m.name for m in node.body if _plain_method(m)}
               for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    made: dict[int, str] = {}  # the Name nodes that `a = A(...)` binds -> A
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call) \
                    and isinstance(node.value.func, ast.Name) and node.value.func.id in classes:
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    made[id(target)] = node.value.func.id
    other: set[str] = set()  # names also bound some other way
    instances: dict[str, set[str]] = {}  # name -> the classes it is made from
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                (instances.setdefault(node.id, set()).add(made[id(node)]) if id(node) in made else other.add(node.id))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                other.add(node.name)
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                other |= set(node.names)
            elif isinstance(node, ast.arg):
                other.add(node.arg)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                other |= {a.asname or a.name.split(".")[0] for a in node.names}
    own = {name: methods for name, methods in classes.items() if name not in other}
    own |= {name: set() for name, made_from in instances.items() if name not in other and made_from <= set(own)}
    return own


def method_selves(tree: ast.AST) -> set[int]:
    """The Name nodes (their ids) that read a method's own object: the first parameter of a method of a class
    the cell defines, in that method, where it is not rebound (and not shadowed by an inner function's own)."""
    found: set[int] = set()

    def visit(node: ast.AST, selves: frozenset[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = selves
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = selves - _locals_of(child)
                if isinstance(node, ast.ClassDef) and _plain_method(child):
                    first = [*child.args.posonlyargs, *child.args.args][0].arg
                    if not any(isinstance(n, ast.Name) and n.id == first and not isinstance(n.ctx, ast.Load)
                               for n in ast.walk(child)):
                        inner |= {first}
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load) and child.id in selves:
                found.add(id(child))
            visit(child, inner)

    visit(tree, frozenset())
    return found


def _called_in_target(target: ast.Attribute) -> str | None:
    """The function whose result an attribute target's object comes from, when it is a plain call (`type` in
    `type(x).predict`, `g` in `g().a.b`, "lambda"), not a method's (`model.get_layer("x").trainable`)."""
    node: ast.AST = target.value
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                return node.func.id
            if isinstance(node.func, ast.Lambda):
                return "lambda"
            node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
        else:
            node = node.value
    return None


def _name_read_by_string(node: ast.Call) -> str | None:
    """What a `getattr(x, name)`, `operator.attrgetter(name)` or `methodcaller(name)` call reads that `ast`
    cannot see: the name when it is a reaching one, "a computed name" when it is not written out."""
    func = node.func
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if called not in BY_NAME:
        return None
    names = node.args[1:2] if called == "getattr" else node.args[:1] if called == "methodcaller" else node.args
    for name in names:
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            return "a computed name"
        reaching = REACHING_ATTRIBUTES | KERNEL_ATTRIBUTES | REACHING_SYS | REACHING_AS_ATTRIBUTES | HISTORY
        if any(part in reaching or _module_alias(part) for part in name.value.split(".")):  # `"session.send"` too
            return f"`{name.value}`"
    return None


def _module_alias(name: str) -> bool:
    """Whether an attribute of this name is a reaching module (`sys`, `_sys`, `builtin_mod`...)."""
    return name in REACHING_AS_ATTRIBUTES or name.lstrip("_") in REACHING_AS_ATTRIBUTES


def _reaching_in_text(text: str) -> str | None:
    """The first reaching attribute a string names (`"{0.__globals__[_ih]}"`: a format template or another
    template language reads it), or None."""
    return next((word for dot, word in re.findall(r"(\.?)([A-Za-z_]\w*)", text)
                 if word in REACHING_ATTRIBUTES or (dot and word in KERNEL_ATTRIBUTES)), None)


def _named(node: ast.AST) -> str | None:
    """A reaching attribute a node names without reading it: a variable or function of that name (in a class:
    `__getattribute__ = ...`), or a string that names it (`_reaching_in_text`); else None."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        return node.id if node.id in REACHING_ATTRIBUTES else None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name if node.name in REACHING_ATTRIBUTES else None
    return _reaching_in_text(node.value) if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _computed_template(node: ast.Call) -> bool:
    """Is this a call that formats a template (`.format`, `.format_map`, a `string.Formatter`'s) not written
    out as a string, which may name any attribute (`("{0.__glo" + "bals__}").format(f)`)?"""
    func = node.func
    return isinstance(func, ast.Attribute) and func.attr in FORMATTING and not (
        isinstance(func.value, ast.Constant) and isinstance(func.value.value, str))


def cell_findings(tree: ast.Module, needed: dict[str, str], roots: set[str], aliases: dict[str, str],
                  modules: set[str] = frozenset(), tainted: set[str] = frozenset(),
                  mine: dict[str, set[str]] | None = None) -> list[str]:
    """What one student cell does that could change the tests (see the module's docstring).

    `needed`: names the assignment's code reads after this cell -> "defines" (bound by its cells above) or
    "built-in" (a rebinding would change what it sees); `roots`: names whose attributes are the assignment's or
    a library's (what is imported and what the assignment's code defines); `aliases`: the imported names ->
    their modules; `modules`: names bound to modules (`import x`); `tainted`: the student's names for roots;
    `mine`: the notebook's own classes and objects (`own_objects`).
    """
    mine = mine or {}
    selves = method_selves(tree)
    calling_self = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args
                    and isinstance(n.args[0], ast.Name) and id(n.args[0]) in selves}  # `Base.f(self, ...)`
    found: list[str] = []
    say = lambda text: found.append(text) if text not in found else None
    for name, how in top_level_names(tree).items():
        if name in needed:
            say(f"{'deletes' if how == 'del' else 'rebinds'} `{name}`, which the assignment's code "
                + ("defines and reads later" if needed[name] == "defines" else "reads later (a built-in)"))
    bases = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {  # and getattr(m, "a")
        id(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        and n.func.id in ("getattr", "hasattr") and n.args}
    own = set(top_level_names(tree))  # `for _i in ...` binds its own `_i`
    for node, local, _ in _scopes(tree):
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                if name in needed:
                    say(f"declares `global {name}` in a function (the assignment's code reads `{name}`)")
        elif targets := _assignment_targets(node):
            if any(isinstance(a, ast.Attribute) and a.attr == "flags" for target in targets for a in ast.walk(target)):
                say("changes an array's flags: the data the tests read are read-only")
            for t in (item for target in targets for item in _element_targets(target, ast.Subscript)):
                sources = _target_references(t)
                holder = next((r for r in sorted(sources) if r in roots and r not in local), None)
                if holder and _last_name(t.value) not in FREE_TABLES:
                    say(f"{'deletes' if isinstance(node, ast.Delete) else 'assigns'} an item of "
                        f"`{ast.unparse(t.value)}` (`{holder}` is imported or the assignment's): a library's or the "
                        "assignment's table is the tests' too")
            for t in (a for target in targets for a in _element_targets(target, ast.Attribute)):
                sources = _target_references(t)
                root = next((r for r in sorted(sources) if r in roots and r not in local), None)
                alias = next((r for r in sorted(sources) if r in tainted), None)
                verb = "deletes" if isinstance(node, ast.Delete) else "assigns"
                if root:
                    say(f"{verb} `{ast.unparse(t)}` (an attribute of `{root}`, which "
                        f"{'is imported' if root in aliases else 'the assignment defines'})")
                elif alias:
                    say(f"{verb} `{ast.unparse(t)}` (`{alias}` is bound to something imported or the assignment's)")
                elif called := _called_in_target(t):
                    say(f"{verb} `{ast.unparse(t)}` on what `{called}(...)` returns: a class or module it "
                        "returns is the tests' too")
                elif not (t.attr in FREE_ATTRIBUTES or isinstance(t.value, ast.Name) and (
                        id(t.value) in selves or t.value.id in mine and t.value.id not in local)):
                    say(f"{verb} `{ast.unparse(t)}` on an object not known to be the notebook's own (a parameter, "
                        "an item, what a call returned): a library's class or module there is the tests' too")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in mine \
                and node.value.id not in local and node.attr in mine[node.value.id] and id(node) not in calling_self:
            say(f"uses `{ast.unparse(node)}` through its class, not on its own object: the method's `self` can then "
                "be anything (a library's class)")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in local | own and (
                node.id in HISTORY or (node.id.startswith("_i") and node.id[2:].isdigit())):
            say(f"reads `{node.id}`, the kernel's record of the cells' code (the running test's code among it)")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in modules \
                and node.id not in local and id(node) not in bases:
            say(f"uses the module `{node.id}` itself as a value: its attributes can then be changed out of sight")
        elif isinstance(node, ast.Name) and node.id in REACHING_CALLS and node.id not in local:
            say(f"uses `{node.id}`" + (" (the kernel itself; IPython magics and `!` commands use it too)"
                                       if node.id == "get_ipython" else ""))
        elif isinstance(node, ast.Call) and (by_string := _name_read_by_string(node)):
            say(f"reads an attribute by {by_string} (`{ast.unparse(node.func)}`)")
        elif isinstance(node, ast.Call) and _computed_template(node):
            say(f"formats a template that is not written out (`{ast.unparse(node.func)}`): a template reads the "
                "attributes it names")
        elif isinstance(node, ast.keyword) and node.arg in CALLER_KEYWORDS:
            say(f"passes `{node.arg}=`: it reaches the code of the function's caller (a test's, when a test calls it)")
        elif isinstance(node, ast.keyword) and node.arg in SAFE_KEYWORDS and not (
                isinstance(node.value, ast.Constant) and node.value.value is SAFE_KEYWORDS[node.arg]):
            say(f"passes `{node.arg}={ast.unparse(node.value)}`: the loader may run code stored in what it loads")
        elif isinstance(node, ast.Attribute) and node.attr == "setflags":
            say("uses `setflags`: the data the tests read are read-only")
        elif isinstance(node, ast.Attribute) and node.attr in REACHING_ATTRIBUTES | KERNEL_ATTRIBUTES:
            say(f"uses the attribute `{node.attr}`")
        elif isinstance(node, ast.Attribute) and node.attr in REACHING_CALLS - METHOD_NAMES:
            say(f"uses `{ast.unparse(node)}`" + (" (the kernel itself)" if node.attr == "get_ipython" else ""))
        elif name := _named(node):
            say(f"names the attribute `{name}` (in a class, a dictionary or a string)")
        elif isinstance(node, ast.Attribute) and _module_alias(node.attr):
            say(f"uses `{ast.unparse(node)}`, the module `{node.attr}`")
        elif isinstance(node, ast.Attribute) and node.attr in REACHING_SYS and (
                aliases.get(_root(node) or "") == "sys" or node.attr not in SYS_WORDS):
            say(f"uses `{ast.unparse(node)}`")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id not in local \
                and f"{aliases.get(node.value.id)}.{node.attr}" in REACHING_SUBMODULES:
            say(f"uses `{ast.unparse(node)}`")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            dotted = names if isinstance(node, ast.Import) else [f"{node.module}.{a.name}" for a in node.names]
            for module in (m for m in dotted if any(m == r or m.startswith(f"{r}.") for r in REACHING_SUBMODULES)):
                say(f"imports `{module}`")
            for module in names:
                top = module.split(".")[0]
                if top in REACHING_MODULES:
                    say(f"imports `{module}`")
                elif top.startswith("_") and top != "__future__":  # `_ctypes`, `_pickle`, `_testcapi`...
                    say(f"imports `{module}`, a private module (the C side of `ctypes`, `pickle`, the interpreter's "
                        "tests...)")
            if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
                say(f"imports `*` from `{node.module}`: it can rebind any name the tests read (`all`, `type`...)")
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name in (REACHING_CALLS - METHOD_NAMES) | REACHING_ATTRIBUTES | KERNEL_ATTRIBUTES:
                        say(f"imports `{alias.name}` from `{node.module}`")
            if isinstance(node, ast.ImportFrom) and node.module == "sys":
                for alias in node.names:
                    if alias.name in REACHING_SYS:
                        say(f"imports `{alias.name}` from `sys`")
    return found


def findings(cells: Iterable[tuple[str, bool, str]]) -> list[str]:
    """One line per finding in a notebook's student cells: "cell NAME does ...".

    `cells`: (name, locked, source) of each code cell in order; locked cells are the assignment's
    (restored from the release), the others the student's.
    """
    parsed, unread, budget, transforming = [], [], READ_LIMIT, TRANSFORM_LIMIT
    for name, locked, source in cells:
        if not locked:
            if len(source) > budget:
                unread.append(f"cell {name} was not read: {len(source) // 1024:,} KB of code, past the "
                              f"{READ_LIMIT // 1024} KB of a notebook's code that the grader reads")
                continue
            budget -= len(source)
        try:
            tree = _python(source)
            if tree is None:
                cost = _transform_cost(source)
                if not locked and cost > transforming:
                    unread.append(f"cell {name} was not read: it is not Python as written, and IPython's "
                                  f"transformer would read its {len(source) / 1024:,.0f} KB again for each of "
                                  f"{cost // len(source):,} lines of IPython syntax (`%`, `!`...), past what the "
                                  "grader gives it")
                    continue
                transforming -= 0 if locked else cost
                tree = _ipython(source)
            parsed.append((name, locked, tree))
        except (RecursionError, MemoryError):
            if locked:
                raise
            unread.append(f"cell {name} was not read: its code is nested too deeply for Python's parser")
    trees = [(locked, tree) for _, locked, tree in parsed if tree is not None]
    bindings = [(locked, top_level_names(tree)) for locked, tree in trees]
    aliases = {name: module for _, tree in trees for name, module in imported(tree).items()}
    modules = {alias.asname or alias.name.split(".")[0] for _, tree in trees for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    roots = set(aliases) | {n for locked, bound in bindings if locked for n in bound}
    tainted = aliases_of([tree for locked, tree in trees if not locked], roots)
    mine = own_objects(tree for locked, tree in trees if not locked)
    read = [(locked, reads(tree)) for locked, tree in trees]
    called = {n for locked, (_, later) in read if locked for n in later}  # read by its functions, any time
    found: list[str] = []
    defined: set[str] = set()  # what the assignment's cells above have bound
    position = 0
    for name, locked, tree in parsed:
        if tree is None:
            continue
        position += 1
        if locked:
            defined |= set(bindings[position - 1][1])
            continue
        later = called | {n for locked_after, (early, _) in read[position:] if locked_after for n in early}
        needed = {n: "defines" for n in defined & later} | {n: "built-in" for n in (BUILTINS & later) - defined}
        found += [f"cell {name} {text}" for text in cell_findings(tree, needed, roots, aliases, modules, tainted, mine)]
    return found + unread
