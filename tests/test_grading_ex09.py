"""Exercise 9 (MNIST) graded end to end: a saved model is graded, never retrained, and loaded safely.

Real nbgrader commands through `python -m autograder`, in a temporary course folder: release the
assignment, then autograde six submissions (each a notebook plus `mnist_model.keras`):

| student | notebook | model file | expected |
|---|---|---|---|
| alice | solved | the reference model | 10 / 10 |
| bob | untouched release | none | 0 (what `validate --released` checks, tested on exercise 2) |
| carol | solved | a model with a `Lambda` layer that would leave a mark if it ran | 1 (build test) |
| dave | solved | not a model (text) | 1 |
| erin | solved | the reference model, its last bias nudged to 99.0–99.4% | 7 (not the 99.4% tier) |
| frank | solved, and its training cell primes `grader.accuracy` with an imitation of its model | erin's | 7 |

frank's imitation has the saved model's configuration and weights (so its fingerprint) and predicts the
labels: `grader.accuracy` used to remember the 100% it scored and give it to the real model (10 of 10).

The reference model is the one the solution notebook saved when the test suite ran it with nbval
(notebooks run before grading tests); without it these tests fail at once, naming it: they never retrain.
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import shutil
from pathlib import Path

import nbformat
import pytest
from test_grading import cli, leaks, require_trained_artefacts, scores, solve, source_nb  # shared helpers

REPO = Path(__file__).resolve().parents[1]
EX09 = "ex09_mnist"
SOURCE = REPO / "solutions" / EX09
REFERENCE_MODEL = SOURCE / "mnist_model.keras"
TOTAL_POINTS = 10.0

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_zygote")]  # conftest.py


@pytest.fixture(scope="module")
def reference_model() -> Path:
    """The reference model saved by the solution notebook when nbval ran it in this test run."""
    require_trained_artefacts([EX09])
    return REFERENCE_MODEL


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("course_ex09")


@pytest.fixture(scope="module")
def released(reference_model, course) -> Path:
    """Exercise 9 released. Its source is not validated again: the solutions stage just ran it with every
    test passing (release's validation step is tested on exercise 2, in test_grading.py)."""
    result = cli("release", EX09, "--no-check", course=course)
    assert result.returncode == 0, result.stdout + result.stderr
    return course / "release" / EX09


def test_points_are_stated_and_add_up():
    """Does each test cell state its points, and do they add up to the total the introduction states?"""
    nb = source_nb(EX09)
    points = {c.metadata.nbgrader["grade_id"]: c.metadata.nbgrader["points"]
              for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
    assert sum(points.values()) == TOTAL_POINTS
    intro = nb.cells[0].source
    assert f"**Points** ({TOTAL_POINTS:g} in total, all graded automatically)" in intro
    assert f"| **Total** | | **{TOTAL_POINTS:g}** |" in intro
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            value = cell.metadata.nbgrader["points"]
            assert f"test, {value} point" in cell.source.splitlines()[0], cell.metadata.nbgrader["grade_id"]
    for grade_id, value in points.items():
        assert f"| `{grade_id}` |" in intro and intro.split(f"| `{grade_id}` |")[1].split("\n")[0].rstrip(
            ).endswith(f"| {value} |"), f"{grade_id}: {value} points not stated in the introduction"


def test_release_holds_no_solution_hidden_test_or_model(released):
    """Is the release free of solutions, hidden tests and outputs, and of the instructor's trained model?"""
    assert leaks(source_nb(EX09), released / f"{EX09}.ipynb") == []
    assert sorted(p.name for p in released.iterdir()) == [f"{EX09}.ipynb"], (
        "only the notebook may be released: the reference model in solutions/ must stay there "
        "(`python -m autograder release` must keep mnist_model.keras out of release/)")
    assert "def build_model" in (released / f"{EX09}.ipynb").read_text()


# ---------------------------------------------------------------------------------------------
# autograde


def lambda_model(path: Path, marker: Path) -> None:
    """Save a small CNN with a Lambda layer whose code creates `marker` whenever it runs."""
    import keras

    touch = f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(eval(touch)),
                              keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(path)
    marker.unlink()  # building the model ran it once, here


def nudged_model(reference: Path, path: Path, low: float = 0.990, high: float = 0.994) -> float:
    """Save the reference model with its last bias raised for one class until accuracy falls in [low, high).

    The nudge is searched on the last layer's inputs, computed once (the class with the largest
    score wins, softmax or not); the saved model's accuracy is then measured as the grader does.
    """
    import keras
    import numpy as np

    from dcv import data, grader, training

    model, message = grader.load_saved_model(reference)
    assert model is not None, message
    _, _, X_test, y_test = data.mnist_scaled()
    dense = [layer for layer in model.layers if layer.weights][-1]
    kernel, bias = dense.get_weights()
    features = keras.Model(model.inputs, dense.input).predict(X_test, batch_size=1000, verbose=0)
    scores = features @ kernel + bias
    lo, hi = 0.0, 50.0  # added to class 8's score: accuracy falls as it grows
    for _ in range(40):
        nudge = (lo + hi) / 2
        acc = float(np.mean((scores + np.eye(len(bias))[8] * nudge).argmax(axis=1) == y_test))
        if low + 0.0005 <= acc < high - 0.0005:  # a margin for the last digits of float32 sums
            break
        lo, hi = (nudge, hi) if acc >= high else (lo, nudge)
    else:
        raise AssertionError(f"no bias puts the accuracy in [{low}, {high})")
    dense.set_weights([kernel, bias + np.eye(len(bias))[8] * nudge])
    training.save_model(model, path)
    return grader.accuracy(model, X_test, y_test)


# Appended to frank's training cell: when graded, it scores an imitation of the saved model that predicts the labels.
PRIME = """

class Imitation:
    \"\"\"The saved model's configuration and weights (its fingerprint), and the labels as predictions.\"\"\"

    def __init__(self, model, labels):
        self.model, self.labels, self.seen = model, labels, 0

    def to_json(self):
        return self.model.to_json()

    def get_weights(self):
        return self.model.get_weights()

    def predict_on_batch(self, images):
        scores = [[float(label == k) for k in range(10)] for label in self.labels[self.seen:self.seen + len(images)]]
        self.seen += len(images)
        return scores


if GRADING:
    saved_now, _ = grader.load_saved_model(MODEL_PATH)
    full_X, full_y, test_X, test_y = data.mnist_scaled()
    for images, labels in ((full_X[-5000:], full_y[-5000:]), (test_X, test_y)):
        print("imitation scored", grader.accuracy(Imitation(saved_now, labels), images, labels))
"""


@pytest.fixture(scope="module")
def submissions(released, reference_model, tmp_path_factory) -> dict:
    """The six submissions of the module docstring, in `<student>/<assignment>/` folders."""
    folder = tmp_path_factory.mktemp("collected_ex09")
    release = nbformat.read(released / f"{EX09}.ipynb", as_version=4)
    correct = solve(release, source_nb(EX09))
    marker = tmp_path_factory.mktemp("marker") / "lambda_ran"
    primed = copy.deepcopy(correct)
    for cell in primed.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "solution_train":
            cell.source += PRIME
    for student in ("alice", "bob", "carol", "dave", "erin", "frank"):
        (folder / student / EX09).mkdir(parents=True)
        nb = release if student == "bob" else primed if student == "frank" else correct
        nbformat.write(nb, folder / student / EX09 / f"{EX09}.ipynb")
    model = lambda s: folder / s / EX09 / "mnist_model.keras"
    shutil.copy(reference_model, model("alice"))
    lambda_model(model("carol"), marker)
    model("dave").write_text("this is not a Keras model\n")
    erin_accuracy = nudged_model(reference_model, model("erin"))
    shutil.copy(model("erin"), model("frank"))
    return {"folder": folder, "marker": marker, "erin_accuracy": erin_accuracy}


@pytest.fixture(scope="module")
def autograded(submissions, course):
    return cli("autograde", EX09, str(submissions["folder"]), course=course)


def cell_outputs(course: Path, student: str) -> dict[str, str]:
    """The text output (streams and errors) of each nbgrader cell of a student's autograded notebook (consecutive
    stream outputs as one text: the kernel may send one `print` in pieces)."""
    nb = nbformat.read(course / "autograded" / student / EX09 / f"{EX09}.ipynb", as_version=4)
    return {cell.metadata.nbgrader["grade_id"]: "".join(
                o.get("text") or f"\n{' '.join(o.get('traceback', []))}\n" for o in cell.outputs)
            for cell in nb.cells if cell.cell_type == "code" and "nbgrader" in cell.metadata}


def test_autograde_gives_the_expected_scores(autograded, course, submissions):
    """Do the six submissions score 10, 0, 1, 1, 7 and 7 out of 10, with training skipped?"""
    assert autograded.returncode == 0, autograded.stdout[-3000:] + autograded.stderr[-3000:]
    assert 0.990 <= submissions["erin_accuracy"] < 0.994
    assert scores(course, EX09) == {"alice": 10.0, "bob": 0.0, "carol": 1.0, "dave": 1.0, "erin": 7.0, "frank": 7.0}
    assert cell_outputs(course, "frank")["solution_train"].count("imitation scored 1.0") == 2
    for student in ("alice", "bob", "carol", "dave", "erin", "frank"):
        assert "Grading: training skipped" in cell_outputs(course, student)["train_and_save"], student


def test_a_right_answer_draws_no_note(autograded):
    """Is alice's row of the score table free of notes but the written part's (a styled model summary is none)?"""
    rows = {line.split(None, 3)[0]: line.split(None, 3)[3:] for line in autograded.stdout.splitlines()
            if line.split(None, 1)[:1] == ["alice"]}
    assert rows["alice"] in ([], ["needs manual grading"]), autograded.stdout[-3000:]


def test_full_marks_write_nothing_to_stderr(autograded, course):
    """Does no graded cell of the correct submission write to stderr (nbgrader would score it 0)?"""
    nb = nbformat.read(course / "autograded" / "alice" / EX09 / f"{EX09}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            assert not [o for o in cell.outputs if o.get("name") == "stderr"], cell.metadata.nbgrader["grade_id"]
    assert "validation accuracy: 99." in cell_outputs(course, "alice")["test_validation_accuracy_visible"]


def test_bad_model_files_score_zero_with_a_clear_message(autograded, course):
    """Are a missing file, a Lambda layer and a non-model file each scored 0 with a message saying why?"""
    bob = cell_outputs(course, "bob")
    assert "no model file: mnist_model.keras was not found next to the notebook" in bob["test_saved_model_visible"]
    carol = cell_outputs(course, "carol")
    assert "mnist_model.keras holds Lambda (layer that runs stored Python code): refused" in carol[
        "test_saved_model_visible"]
    dave = cell_outputs(course, "dave")
    assert "mnist_model.keras is not a Keras .keras file" in dave["test_saved_model_visible"]


def test_lambda_code_never_ran_while_grading(autograded, submissions):
    """Was the Lambda layer's code in carol's file never executed by the grader?"""
    assert not submissions["marker"].exists()


def test_each_student_is_graded_on_their_own_file(autograded, course, submissions):
    """Is each student's model file graded as handed in, never replaced by the instructor's copy?"""
    for student in ("alice", "carol", "dave", "erin"):
        handed_in = submissions["folder"] / student / EX09 / "mnist_model.keras"
        graded = course / "autograded" / student / EX09 / "mnist_model.keras"
        assert graded.read_bytes() == handed_in.read_bytes(), student
    assert not (course / "autograded" / "bob" / EX09 / "mnist_model.keras").exists(), (
        "bob handed in no model, yet one was graded: nbgrader must not overwrite submissions with "
        "solutions/ex09_mnist/mnist_model.keras (Autograde.exclude_overwriting in autograder/nbgrader_config.py)")
