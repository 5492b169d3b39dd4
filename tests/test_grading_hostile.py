"""Hostile and broken submissions of exercise 2, graded in one `autograde` run, each as intended.

Every kernel runs in the sandbox (autograder/sandbox.py) with the short limits of this class
(`autograder_config.py` in the course folder). Each student below is the correct solution plus one
hostile or broken change; the table gives the automatic points expected (of 15) and why.

| student | what it does | expected |
|---|---|---|
| right | the solution | 15 |
| loop | a cell that loops forever, ignoring interrupts | 12: cell timed out, its kernel killed 2 s later |
| sleeper | a cell that sleeps for two minutes | 15: cell timed out and interrupted; the cells after it run |
| memhog | allocates 6 GiB | 15: MemoryError in its own cell, stated |
| memforks | 3 forked children holding 200 MB each | 12: killed at the notebook's memory limit |
| killer | `os.kill(-1, SIGKILL)` | 6: kernel died; the cells after it score 0 |
| forkbomb | forks until refused | 15: fork refused at the process limit |
| network | DNS, the Internet, the grader's loopback | 15: all unreachable |
| snoop | reads and writes the course, solutions, other students | 15: none of it is visible |
| tamper_edit | wrong conv_params, its tests replaced by `pass`, points edited | 4: tests and points restored |
| tamper_delete | deletes the locked setup cell and two test cells | 15: restored and run, stated |
| invalid_json | not JSON | 0: not a notebook, stated |
| wrong_name | a single notebook under another name | 15: graded, the name stated |
| duplicate | duplicated cells and cell ids (a wrong copy first) | 15: the last copy graded, stated |
| huge_output | prints 6 MB | 15: output capped, stated |
| diskfill | writes in its kernel's runtime folder, then 16 MB files in its own | 15: refused; 64 MB, then full |
| warns | every function writes to stderr | 15 (nbgrader gives 0) |
| fool | returns an int subclass whose == is always true | 0 (it used to get 12) |
| cheat | answers 0, rebinds `exactly` (the tests' helper) to always say yes | 8, flagged for review |
| shadow | answers "equal to anything", rebinds the built-in `type` that `exactly` reads | 12, flagged for review |
| peek | answers with the value the running test expects, read from its code in IPython's `In[-1]` | 5, flagged |
| rewire | answers 0, reaches the kernel through `ipywidgets.get_ipython` and empties every later cell | 15, flagged |
| forge | answers 0, has the kernel's messenger (`sys.stdout.session`) report each failed test as passed | 15, flagged |
| smuggle | answers 0, writes a module that rebinds `exactly` (rot13: unreadable), imports it | 0 (it took 14) |
| rewrite | answers 0, copies a lambda's code into `exactly` through `/proc/self/mem` (plain `open`) | 0: refused |
| listen | starts a process that subscribes to its kernel's IOPub, answers what the tests' code expects | 0 (took 5) |

Code that rebinds what the tests use runs in the tests' own process, so no sandbox can stop it; the
grader reads every student cell (autograder/tampering.py) and flags such code instead. Only `cheat`,
`shadow`, `peek`, `rewire` and `forge` are flagged here: the other students' code (sockets, forks, stderr) changes
nothing the tests see. What reading cannot see, a module the notebook writes (`smuggle`), its own memory written
as a file (`rewrite`) and a process it starts listening to its kernel (`listen`), the sandbox stops.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from test_grading import REPO, cli, replace_in_cell, scores, solve, source_nb

EX02 = "ex02_params_memory"
SOURCE = REPO / "solutions" / EX02 / f"{EX02}.ipynb"
LIMITS = """\
c.Sandbox.cell_timeout = 8
c.Sandbox.notebook_timeout = 25
c.Sandbox.interrupt_grace = 2
c.Sandbox.memory_mb = 512
c.Sandbox.address_space_mb = 3072  # TensorFlow, imported by the zygote, maps ~1.7 GB in every kernel
c.Sandbox.processes = 64
c.Sandbox.output_mb = 1.0
c.Sandbox.work_mb = 64
"""
EXPECTED = {"right": 15, "loop": 12, "sleeper": 15, "memhog": 15, "memforks": 12, "killer": 6, "forkbomb": 15,
            "network": 15, "snoop": 15, "tamper_edit": 4, "tamper_delete": 15, "invalid_json": 0, "wrong_name": 15,
            "duplicate": 15, "huge_output": 15, "diskfill": 15, "warns": 15, "fool": 0, "cheat": 8, "shadow": 12,
            "peek": 5, "rewire": 15, "forge": 15, "smuggle": 0,
            "rewrite": 0, "listen": 0}
# The answer cells of `shadow` and `peek` (the first one holds it all; the others are emptied).
SHADOW = """\
def type(x):  # the built-in, for every cell of the notebook: `exactly` compares types with it
    return int


class Yes:
    def __eq__(self, other):
        return True


conv_output_size = conv_params = cnn_params = inference_bytes = training_bytes = lambda *a, **k: Yes()
feature_map_shapes = lambda shape, layers: [Yes() for _ in layers]
"""
# What `peek` and `listen` answer with once they hold the running test's code: the value its line
# `exactly(name(*args), value)` expects (their own `expected` finds that code).
ANSWERS_FROM_CODE = """

def expected_in(source, name, args):
    \"\"\"The value that `exactly(name(*args), value)` in `source` expects, or None.\"\"\"
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "exactly" and len(node.args) == 2
                and isinstance(node.args[0], ast.Call) and getattr(node.args[0].func, "id", "") == name):
            try:
                if tuple(ast.literal_eval(a) for a in node.args[0].args) == args:
                    return ast.literal_eval(node.args[1])
            except ValueError:
                pass
    return None


conv_output_size = lambda *a: expected("conv_output_size", a)
conv_params = lambda *a: expected("conv_params", a)
cnn_params = lambda *a: expected("cnn_params", a)
inference_bytes = lambda *a, **k: expected("inference_bytes", a)
training_bytes = lambda *a, **k: expected("training_bytes", a)
feature_map_shapes = lambda shape, layers: [(0, 0, 0) for _ in layers]
"""
PEEK = """\
import ast


def expected(name, args):
    \"\"\"The value the running cell expects: In[-1] is that cell's code.\"\"\"
    found = expected_in(In[-1], name, args)
    return 0 if found is None else found
""" + ANSWERS_FROM_CODE
# The kernel, reached as another module's attribute (`get_ipython()` itself is flagged): every later cell,
# the tests included, becomes `pass`, so every test passes whatever the answers.
REWIRE = """\
import ipywidgets

ipywidgets.get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"])
conv_output_size = conv_params = cnn_params = inference_bytes = training_bytes = lambda *a, **k: 0
feature_map_shapes = lambda shape, layers: [(0, 0, 0) for _ in layers]
"""
# The kernel's messenger, reached from `sys.stdout` passed to a function (no attribute of `sys` is assigned): the
# error output of each failed test is dropped and its reply says "ok", so nbgrader counts every test as passed.
FORGE = """\
import sys


def forge(stream):
    messenger = stream.session
    send = messenger.send

    def quiet(socket, message, content=None, *args, **kwargs):
        if message == "error":
            return None
        if message == "execute_reply" and content and content.get("status") == "error":
            content = {"status": "ok", "execution_count": content.get("execution_count"), "user_expressions": {},
                       "payload": []}
        return send(socket, message, content, *args, **kwargs)

    messenger.send = quiet


forge(sys.stdout)
conv_output_size = conv_params = cnn_params = inference_bytes = training_bytes = lambda *a, **k: 0
feature_map_shapes = lambda shape, layers: [(0, 0, 0) for _ in layers]
"""

# A module of its own, written where the kernel runs and imported: no code in the cells rebinds anything, and the
# module's text (`import __main__; __main__.exactly = lambda *a: True`) is encoded, so no reading can see it.
SMUGGLE = """\
import codecs

conv_output_size = conv_params = cnn_params = inference_bytes = training_bytes = lambda *a, **k: 0
feature_map_shapes = lambda shape, layers: [(0, 0, 0) for _ in layers]
with open("helper.py", "w") as module:
    module.write(codecs.decode("vzcbeg __znva__\\n__znva__.rknpgyl = ynzoqn *n: Gehr\\n", "rot13"))
import helper
"""
# The kernel's own memory as a file: 8 bytes of `exactly` (its code object's address) overwritten with a lambda's.
REWRITE = """\
yes = lambda value, expected: True
with open("/proc/self/mem", "r+b", buffering=0) as memory:
    memory.seek(id(yes) + 48)
    code = memory.read(8)
    memory.seek(id(exactly) + 48)
    memory.write(code)
conv_output_size = conv_params = cnn_params = inference_bytes = training_bytes = lambda *a, **k: 0
feature_map_shapes = lambda shape, layers: [(0, 0, 0) for _ in layers]
"""

# A process of its own that subscribes to the kernel's IOPub sockets (files in its runtime folder) and writes down the
# code of each cell the kernel announces, the hidden tests' among them; the answers are what that code expects.
LISTEN = """\
import ast
import os
import subprocess
import sys
import time

LISTENER = '''
import json, os, stat, sys, zmq
sub = zmq.Context().socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"")
for name in os.listdir(sys.argv[1]):
    if stat.S_ISSOCK(os.lstat(os.path.join(sys.argv[1], name)).st_mode):
        sub.connect("ipc://" + os.path.join(sys.argv[1], name))
while True:
    parts = sub.recv_multipart()
    i = parts.index(b"<IDS|MSG>")
    if json.loads(parts[i + 2])["msg_type"] == "execute_input":
        with open("/tmp/heard.py", "w") as f:
            f.write(json.loads(parts[i + 5])["code"])
'''
subprocess.Popen([sys.executable, "-c", LISTENER, os.path.dirname(sys.argv[sys.argv.index("-f") + 1])])
time.sleep(0.5)


def expected(name, args):
    \"\"\"The value the running cell expects, from its code as the kernel announced it.\"\"\"
    for _ in range(30):
        try:
            found = expected_in(open("/tmp/heard.py").read(), name, args)
        except OSError:
            found = None
        if found is not None:
            return found
        time.sleep(0.01)
    return 0
""" + ANSWERS_FROM_CODE

pytestmark = pytest.mark.slow


def grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def index_of(nb, gid: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if grade_id(c) == gid)


def insert_after(nb, gid: str, code: str):
    """A copy of the notebook with a plain code cell added after the cell `gid`."""
    nb = copy.deepcopy(nb)
    nb.cells.insert(index_of(nb, gid) + 1, nbformat.v4.new_code_cell(code))
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    course = tmp_path_factory.mktemp("hostile_course")
    (course / "autograder_config.py").write_text(LIMITS)
    result = cli("release", EX02, "--no-check", course=course)
    assert result.returncode == 0, result.stdout + result.stderr
    return course


@pytest.fixture(scope="module")
def listener():
    """A TCP server on the grader's loopback that no sandboxed kernel may reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    yield server
    server.close()


def hostile_class(course: Path, folder: Path, port: int) -> dict[str, object]:
    """The notebooks of the module docstring's class, by student."""
    release = nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    right = solve(release, source_nb(EX02))
    nbs: dict[str, object] = {"right": right}
    nbs["loop"] = insert_after(right, "test_inference_bytes_hidden", (
        "import time\nwhile True:\n    try:\n        time.sleep(0.2)\n    except KeyboardInterrupt:\n        pass"))
    nbs["sleeper"] = insert_after(right, "test_inference_bytes_hidden", "import time\ntime.sleep(120)")
    nbs["memhog"] = insert_after(right, "solution_inference_bytes", "hog = bytearray(6 * 1024 ** 3)")
    nbs["memforks"] = insert_after(right, "test_inference_bytes_hidden", (
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        block = b'x' * (200 * 1024 ** 2)\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "time.sleep(20)"))
    nbs["killer"] = insert_after(right, "solution_cnn_params", (
        "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)  # every process it may signal\n"
        "except ProcessLookupError:\n    print('kill -1: no other process in view')\n"
        "os.kill(os.getpid(), signal.SIGKILL)"))
    nbs["forkbomb"] = insert_after(right, "solution_training_bytes", (
        "import os, time\nchildren = 0\ntry:\n    while children < 5000:\n        if os.fork() == 0:\n"
        "            time.sleep(30)\n            os._exit(0)\n        children += 1\n"
        "except OSError as exc:\n    print('fork refused after', children, 'children:', type(exc).__name__)"))
    nbs["network"] = insert_after(right, "solution_training_bytes", (
        "import socket\n"
        f"for what, address in [('internet', ('pypi.org', 443)), ('grader loopback', ('127.0.0.1', {port}))]:\n"
        "    try:\n"
        "        socket.create_connection(address, timeout=3).close()\n"
        "        print('REACHED', what)\n"
        "    except OSError as exc:\n"
        "        print('blocked', what, type(exc).__name__)"))
    targets = {"source notebook": str(SOURCE), "gradebook": str(course / "gradebook.db"),
               "release": str(course / "release" / EX02 / f"{EX02}.ipynb"),
               "other student (submitted)": str(course / "submitted" / "right" / EX02 / f"{EX02}.ipynb"),
               "other student (collected)": str(folder / "right" / f"{EX02}.ipynb"),
               "course config": str(course / "nbgrader_config.py")}
    nbs["snoop"] = insert_after(right, "solution_training_bytes", (
        "import os, sqlite3\n"
        f"targets = {targets!r}\n"
        "for what, path in targets.items():\n"
        "    try:\n"
        "        open(path, 'rb').read(10)\n"
        "        print('LEAK read', what)\n"
        "    except OSError as exc:\n"
        "        print('blocked read', what, type(exc).__name__)\n"
        "    try:\n"
        "        with open(path, 'ab') as fh:\n"
        "            fh.write(b'x')\n"
        "        print('LEAK write', what)\n"
        "    except OSError as exc:\n"
        "        print('blocked write', what, type(exc).__name__)\n"
        "try:\n"
        "    db = sqlite3.connect(targets['gradebook'])\n"
        "    db.execute('update grade set manual_score = 13000')\n"
        "    db.commit()\n"
        "    print('LEAK gradebook rewritten')\n"
        "except Exception as exc:\n"
        "    print('blocked gradebook', type(exc).__name__)\n"
        "import sys\n"
        "skip = ('/proc', '/usr', '/sys', sys.prefix, sys.base_prefix, os.getcwd())\n"
        "found = []\n"
        "for d, dirs, fs in os.walk('/'):\n"
        "    dirs[:] = [x for x in dirs if not os.path.join(d, x).startswith(skip)]\n"
        "    found += [os.path.join(d, f) for f in fs if f.endswith(('.ipynb', '.db'))]\n"
        "print('notebooks and databases in view:', found)"))
    wrong = replace_in_cell(right, "solution_conv_params", " + 1) * filters", ") * filters")
    for gid in ("test_conv_params_visible", "test_conv_params_hidden"):
        wrong.cells[index_of(wrong, gid)].source = "pass"
    wrong.cells[index_of(wrong, "test_conv_params_hidden")].metadata.nbgrader["points"] = 100
    nbs["tamper_edit"] = wrong
    deleted = copy.deepcopy(right)
    deleted.cells = [c for c in deleted.cells
                     if grade_id(c) not in ("setup_imports", "test_cnn_params_visible", "test_cnn_params_hidden")]
    nbs["tamper_delete"] = deleted
    nbs["wrong_name"] = right
    dup = copy.deepcopy(right)
    i = index_of(dup, "solution_conv_params")
    first = copy.deepcopy(dup.cells[i])
    first.source = first.source.replace(" + 1) * filters", ") * filters")
    dup.cells.insert(i, first)
    j = index_of(dup, "test_conv_params_hidden")
    dup.cells.insert(j + 1, copy.deepcopy(dup.cells[j]))
    nbs["duplicate"] = dup
    nbs["diskfill"] = insert_after(right, "solution_training_bytes", (
        "import os, stat, sys\n"
        "for fd in range(1024):  # ipykernel keeps copies of the console's fds: none may be a file of the grader's\n"
        "    try:\n"
        "        if stat.S_ISREG(os.fstat(fd).st_mode):\n"
        "            print('GRADER FILE OPEN', os.readlink(f'/proc/self/fd/{fd}'))\n"
        "    except OSError:\n"
        "        pass\n"
        "connection = sys.argv[sys.argv.index('-f') + 1]  # in the kernel's runtime folder, on the grader's disk\n"
        "for path in (os.path.join(os.path.dirname(connection), 'fill.bin'), connection):\n"
        "    try:\n"
        "        with open(path, 'ab') as fh:\n"
        "            fh.write(b'x' * 1024)\n"
        "        print('WROTE', path)\n"
        "    except OSError as exc:\n"
        "        print('runtime refused:', type(exc).__name__)\n"
        "written = 0\n"
        "try:\n"
        "    while written < 2048:\n"
        "        with open(f'fill{written}.bin', 'wb') as fh:\n"
        "            fh.write(b'x' * (16 * 1024 ** 2))\n"
        "        written += 16\n"
        "except OSError as exc:\n"
        "    print(f'folder: {written} MB written, then errno {exc.errno}')\n"
        "    raise"))
    nbs["huge_output"] = insert_after(right, "solution_conv_params", "for _ in range(6):\n    print('x' * 1024 ** 2)")
    warns = copy.deepcopy(right)
    for cell in warns.cells:
        if grade_id(cell, ) and grade_id(cell).startswith("solution_") and cell.cell_type == "code":
            head, _, body = cell.source.partition('"""\n')
            cell.source = head + '"""\n    import sys\n    print("note: slow", file=sys.stderr)\n' + body
    nbs["warns"] = warns
    fool = copy.deepcopy(right)
    fool_code = ("class Fool(int):\n    def __eq__(self, other):\n        return True\n"
                 "    def __ne__(self, other):\n        return False\n    __hash__ = int.__hash__\n\n\n"
                 "conv_output_size = lambda *a, **k: Fool(0)\nconv_params = lambda *a, **k: Fool(0)\n"
                 "feature_map_shapes = lambda shape, layers: [(Fool(0), Fool(0), Fool(0)) for _ in layers]\n"
                 "cnn_params = lambda *a, **k: Fool(0)\ninference_bytes = lambda *a, **k: Fool(0)\n"
                 "training_bytes = lambda *a, **k: Fool(0)\n")
    for cell in fool.cells:  # each answer replaced by one that returns fools
        if (grade_id(cell) or "").startswith("solution_") and cell.cell_type == "code":
            cell.source = fool_code if grade_id(cell) == "solution_conv_output_size" else "pass"
    nbs["fool"] = fool
    cheat = copy.deepcopy(right)
    cheat_code = ("exactly = lambda value, expected: True  # the tests' helper, rebound\n"
                  "conv_output_size = conv_params = cnn_params = inference_bytes = training_bytes = lambda *a: 0\n"
                  "feature_map_shapes = lambda shape, layers: [(0, 0, 0) for _ in layers]\n")
    for cell in cheat.cells:  # answers that are all 0, and a helper of the tests that always says yes
        if (grade_id(cell) or "").startswith("solution_") and cell.cell_type == "code":
            cell.source = cheat_code if grade_id(cell) == "solution_conv_output_size" else "pass"
    nbs["cheat"] = cheat
    for student, code in (("shadow", SHADOW), ("peek", PEEK), ("rewire", REWIRE), ("forge", FORGE),
                          ("smuggle", SMUGGLE), ("rewrite", REWRITE), ("listen", LISTEN)):
        nb = copy.deepcopy(right)
        for cell in nb.cells:
            if (grade_id(cell) or "").startswith("solution_") and cell.cell_type == "code":
                cell.source = code if grade_id(cell) == "solution_conv_output_size" else "pass"
        nbs[student] = nb
    return nbs


@pytest.fixture(scope="module")
def graded(course, listener, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_collected")
    for student, nb in hostile_class(course, folder, listener.getsockname()[1]).items():
        (folder / student).mkdir()
        name = "Exercise 2 (final).ipynb" if student == "wrong_name" else f"{EX02}.ipynb"
        # json, not nbformat.write, which would renumber the duplicate cell ids
        (folder / student / name).write_text(json.dumps(nb, indent=1))
    (folder / "invalid_json").mkdir()
    (folder / "invalid_json" / f"{EX02}.ipynb").write_text('{"cells": [')
    started = time.monotonic()
    result = cli("autograde", EX02, str(folder), "--workers", "2", course=course, timeout=900)
    return {"result": result, "folder": folder, "seconds": time.monotonic() - started}


def summary_rows(stdout: str) -> dict[str, str]:
    """Each student's line of the summary table."""
    return {line.split()[0]: line for line in stdout.splitlines() if line.split()[:1] and line.split()[0] in EXPECTED}


def outputs(course: Path, student: str) -> str:
    """A student's graded notebook's printed text and error messages. Consecutive stream outputs are one text:
    the kernel may send one `print` in pieces ("runtime refused:", " PermissionError")."""
    nb = nbformat.read(course / "autograded" / student / EX02 / f"{EX02}.ipynb", as_version=4)
    return "".join(o.get("text") or f"\n{o.get('evalue', '')}\n" for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)


def test_every_hostile_submission_gets_its_expected_score(graded, course):
    """Does each submission of the hostile class get the automatic points of the table, in one run?"""
    result = graded["result"]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    got = scores(course, EX02)
    assert {s: got.get(s, 0.0) for s in EXPECTED} == {s: float(v) for s, v in EXPECTED.items()}, result.stdout[-6000:]
    assert result.returncode == 1 and result.stderr.rstrip().splitlines()[-1] == (
        "autograder: error: 1 submission(s) could not be read: invalid_json (scored 0)")


def test_every_missing_point_has_a_reason(graded, course):
    """Does the summary (and `status`) say, for each student who lost points, why?"""
    rows = summary_rows(graded["result"].stdout)
    reasons = {
        "loop": ["timed out (8 s) and ignored its interrupt for 2 s: kernel killed in cell"],
        "sleeper": ["timed out (8 s) and was interrupted"],
        "memhog": ["ran out of memory (MemoryError: 3072 MB per process)"],
        "memforks": ["memory limit (512 MB for all its processes) in cell"],
        "killer": ["the kernel died"],
        "tamper_delete": ["deleted locked cell(s) restored and run: setup_imports, test_cnn_params_visible, "
                          "test_cnn_params_hidden"],
        "invalid_json": ["not valid notebook JSON"],
        "wrong_name": ["notebook handed in as 'Exercise 2 (final).ipynb'"],
        "duplicate": ["'solution_conv_params' appears more than once: the last copy was graded",
                      "2 duplicate cell id(s) renumbered"],
        "huge_output": ["output limit (1 MB) reached"],
        "diskfill": ["filled its folder or /tmp (No space left on device: 64 MB in its folder, 256 MB in /tmp)"],
        "cheat": ["needs review, its code could change what the tests see: cell 'solution_conv_output_size' "
                  "rebinds `exactly`, which the assignment's code defines and reads later", "needs manual grading"],
    }
    for student, texts in reasons.items():
        for text in texts:
            assert text in rows[student], rows[student]
    review = {"shadow": "cell 'solution_conv_output_size' rebinds `type`, which the assignment's code reads later "
                        "(a built-in)",
              "peek": "cell 'solution_conv_output_size' reads `In`, the kernel's record of the cells' code",
              "rewire": "cell 'solution_conv_output_size' uses `ipywidgets.get_ipython` (the kernel itself)",
              "forge": "cell 'solution_conv_output_size' uses the attribute `session`"}
    for student, text in review.items():
        assert "needs review" in rows[student] and text in rows[student], rows[student]
    flagged = sorted(student for student, row in rows.items() if "needs review" in row)
    assert flagged == ["cheat", "forge", "peek", "rewire", "shadow"]
    status = cli("status", EX02, course=course)
    assert status.returncode == 0, status.stderr
    assert summary_rows(status.stdout) == rows


def test_the_batch_left_every_other_student_and_the_course_untouched(graded, course, listener):
    """Did no kernel read or write another student's files or the gradebook, or reach the network?"""
    right = (graded["folder"] / "right" / f"{EX02}.ipynb").read_bytes()
    assert (course / "submitted" / "right" / EX02 / f"{EX02}.ipynb").read_bytes() == right
    snoop = outputs(course, "snoop")
    assert "LEAK" not in snoop and snoop.count("blocked read") == 6 and snoop.count("blocked write") == 6
    assert "notebooks and databases in view: []" in snoop
    network = outputs(course, "network")
    assert "REACHED" not in network and network.count("blocked") == 2
    assert "No module named 'helper'" in outputs(course, "smuggle")  # the module it wrote was never imported
    assert "Read-only file system: '/proc/self/mem'" in outputs(course, "rewrite")
    with pytest.raises(BlockingIOError):
        listener.accept()
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="dcv-cnn") as gb:
        manual = {g.manual_score for s in gb.find_assignment(EX02).submissions for n in s.notebooks for g in n.grades}
        assert manual == {None}
        assert gb.find_assignment(EX02).max_score == 18.0
    assert "fork refused after" in outputs(course, "forkbomb")
    fill = outputs(course, "diskfill")  # 64 MB of the limit, written in 16 MB files: the fifth one is refused
    assert "folder: 64 MB written, then errno 28" in fill and fill.count("runtime refused: PermissionError") == 2, fill
    assert "GRADER FILE OPEN" not in fill, fill
    assert (course / "autograded" / "huge_output" / EX02 / f"{EX02}.ipynb").stat().st_size < 2 * 1024 ** 2


def test_feedback_shows_results_but_no_hidden_test_code(graded, course):
    """Does feedback show each test's name, result, points and message, and none of the hidden tests' code?"""
    result = cli("feedback", EX02, "--student", "tamper_edit", course=course)
    assert result.returncode == 0, result.stdout + result.stderr
    html = (course / "feedback" / "tamper_edit" / EX02 / f"{EX02}.html").read_text()
    assert "test_conv_params_hidden: failed (0 of 1 point(s))" in html
    assert "test_conv_output_size_hidden: passed (1 of 1 point(s))" in html
    assert "lowest layer of the exercise: 2,800" in html  # the assertion message
    graded_nb = (course / "autograded" / "tamper_edit" / EX02 / f"{EX02}.ipynb").read_text()
    assert "180200" in graded_nb and "903400" in graded_nb  # hidden code, as graded
    assert "180200" not in html and "903400" not in html
    assert "BEGIN HIDDEN TESTS" not in html and "most recent call last" not in html


def test_refuses_without_a_sandbox_unless_told(course, tmp_path):
    """Where namespaces cannot be made (root without CAP_SYS_ADMIN, as in a default container), is grading
    refused in one line, and does --unsafe-no-sandbox grade anyway?"""
    (tmp_path / "late").mkdir()
    release = nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    nbformat.write(solve(release, source_nb(EX02)), tmp_path / "late" / f"{EX02}.ipynb")
    env = {k: v for k, v in os.environ.items() if k != "DCV_COURSE_DIR"}
    run = lambda *extra: subprocess.run(
        ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--",
         sys.executable, "-m", "autograder", "autograde", EX02, str(tmp_path), "--course-dir", str(course), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    refused = run()
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(
        "autograder: error: cannot sandbox the students' kernels: the sandbox cannot be built here: "
        "no right to create Linux namespaces"), refused.stderr
    unsafe = run("--unsafe-no-sandbox")
    assert unsafe.returncode == 0, unsafe.stdout + unsafe.stderr
    assert "--unsafe-no-sandbox: student code runs as you, unconfined" in unsafe.stderr
    assert scores(course, EX02)["late"] == 15.0


def class_of(course: Path, folder: Path, students: list[str]) -> None:
    """A submissions folder in which each student handed in the solved exercise 2."""
    right = solve(nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4), source_nb(EX02))
    for student in students:
        (folder / student).mkdir()
        nbformat.write(right, folder / student / f"{EX02}.ipynb")


def stopped_at_first_result(course: Path, folder: Path, signum: int, workers: int,
                            scratch: str) -> tuple[subprocess.Popen, str]:
    """Start `autograde` (its temporary folders in `scratch`), send `signum` to its process group once the
    first result is printed, as Ctrl-C in a terminal does; return the process once it exited, and its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "DCV_COURSE_DIR"} | {"TMPDIR": scratch}
    # As in a terminal: SIGINT not ignored (a shell's background job, such as a CI run, ignores it, and
    # Python then keeps ignoring it).
    proc = subprocess.Popen([sys.executable, "-m", "autograder", "autograde", EX02, str(folder), "--course-dir",
                             str(course), "--workers", str(workers)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if line.startswith("[1/"):
            os.killpg(proc.pid, signum)
            break
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired as hung:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"autograde --workers {workers} did not exit within 60 s of signal {signum}") from hung
    return proc, stderr


def group(pgid: int, wait: float = 5.0) -> list[str]:
    """The processes of process group `pgid`, zombies included ("pid state (name) parent ppid" each), once
    none is left or after `wait` seconds: a process that exited as its parent did is a zombie until init,
    its new parent, reaps it (once in a loaded CI run)."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:  # gone meanwhile
                continue
            state, ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
            if int(pgrp) == pgid:
                found.append(f"{stat.parent.name} {state} {text[text.index('('):text.rindex(')') + 1]} parent {ppid}")
        if not found or time.monotonic() > deadline or any(" Z " not in f" {line} " for line in found):
            return found  # a live process is reported at once
        time.sleep(0.1)


@pytest.fixture
def scratch():
    """A temporary folder for the commands' own (kernels must be able to enter it), removed after the test."""
    folder = tempfile.mkdtemp(prefix="dcv-test-stop-")
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_kill_9_loses_nothing_and_a_rerun_resumes(course, tmp_path, scratch):
    """After `kill -9` in the middle of a run, does a rerun keep what was recorded, grade the rest, and
    remove the folder (students' notebooks) that the killed command could not?"""
    students = ["resume_a", "resume_b"]
    class_of(course, tmp_path, students)
    stopped_at_first_result(course, tmp_path, signal.SIGKILL, 1, scratch)
    assert scores(course, EX02).get("resume_a") == 15.0
    assert [p.name.startswith("dcv-autograde-") for p in Path(scratch).iterdir()] == [True]
    again = cli("autograde", EX02, str(tmp_path), course=course, env={"TMPDIR": scratch})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already graded: resume_a" in again.stdout
    assert "[1/1] resume_b: 15 of 18" in again.stdout
    assert {s: scores(course, EX02)[s] for s in students} == {s: 15.0 for s in students}
    assert list(Path(scratch).iterdir()) == []


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_with_workers_stops_at_once_and_keeps_what_was_graded(course, tmp_path, scratch, signum, status):
    """Ctrl-C (SIGINT to the command's process group) or `kill` while two workers grade: does the command
    exit at once, say what it kept, leave no process or folder behind, and does a rerun grade the rest?"""
    students = [f"stop_{signum}_{i}" for i in range(4)]
    class_of(course, tmp_path, students)
    proc, stderr = stopped_at_first_result(course, tmp_path, signum, 2, scratch)
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr and "submission(s) graded and recorded; the same command grades the other" in (
        stderr.strip().splitlines()[-1]), stderr
    assert group(proc.pid) == [], "processes of the command left after it exited"
    assert list(Path(scratch).iterdir()) == []
    kept = [s for s in students if scores(course, EX02).get(s) == 15.0]
    assert kept, "the result printed before the signal was not kept"
    again = cli("autograde", EX02, str(tmp_path), course=course)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(f"already graded: {s}" in again.stdout for s in kept)
    assert {s: scores(course, EX02)[s] for s in students} == {s: 15.0 for s in students}


SWAP = """\
import copy, json, sys
sys.path.insert(0, {repo!r})
from nbgrader.api import Gradebook
from autograder import cli, grading, record

course, folder = {course!r}, {folder!r}
with Gradebook(f"sqlite:///{{course}}/gradebook.db") as gb:
    definition = record.definition(gb, {name!r})
second = copy.deepcopy(definition["notebooks"][0])
second["name"] = "second"
definition["notebooks"].append(second)  # an assignment of two notebooks
_, overwrite = cli.assignment_files({name!r})
job = grading.Job({name!r}, "eve", definition, folder, overwrite, cli.load_config(), cli.warm_imports({name!r}))
result = grading.grade(job)
print(json.dumps({{"grades": result.grades, "notebooks": result.notebooks, "reasons": result.reasons}}))
"""


def test_a_kernel_cannot_swap_the_next_notebook_for_a_link(course, tmp_path, scratch):
    """In an assignment of two notebooks, the first one's kernel can write in the submission's folder: does
    the grader still grade the second notebook as handed in, not a link the kernel made to a solution?"""
    secret = Path(scratch) / "solution.ipynb"
    nbformat.write(source_nb(EX02), secret)
    release = nbformat.read(course / "release" / EX02 / f"{EX02}.ipynb", as_version=4)
    folder = tmp_path / "eve"
    folder.mkdir()
    nbformat.write(insert_after(solve(release, source_nb(EX02)), "solution_training_bytes", (
        "import os\n"
        "os.remove('second.ipynb')\n"
        f"os.symlink({str(secret)!r}, 'second.ipynb')\n"
        "print('swapped')")), folder / f"{EX02}.ipynb")
    nbformat.write(release, folder / "second.ipynb")  # handed in untouched
    env = {**os.environ, "DCV_COURSE_DIR": str(course)}
    done = subprocess.run([sys.executable, "-c", SWAP.format(repo=str(REPO), course=str(course), folder=str(folder),
                                                             name=EX02)],
                          cwd=scratch, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    points = {nb: sum(g["auto_score"] or 0 for g in grades.values()) for nb, grades in result["grades"].items()}
    assert "swapped" in result["notebooks"][EX02], result["reasons"]  # the link was made
    assert points == {EX02: 15, "second": 0}, (points, result["reasons"])
    assert "YOUR CODE HERE" in result["notebooks"]["second"]  # the untouched notebook, not the solution
