"""nbgrader configuration of the course "Deep Computer Vision with CNNs".

The assignments' sources are the repository's `solutions/<assignment>/<assignment>.ipynb`; every
other step (release, submitted, autograded, feedback, gradebook.db) lives in the course folder:
`$DCV_COURSE_DIR` if set, else `<repo>/_course/` (gitignored). `python -m autograder` writes a
small `nbgrader_config.py` into the course folder that loads this file, so that `nbgrader ...`
and formgrader started from the course folder use the same configuration.
"""

import os
import sys
from pathlib import Path

c = get_config()

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # nbgrader runs in the course folder: make `autograder` importable
    sys.path.insert(0, str(REPO))

c.CourseDirectory.course_id = "dcv-cnn"
c.CourseDirectory.root = str(Path(os.environ.get("DCV_COURSE_DIR") or REPO / "_course").resolve())
# An absolute source directory: nbgrader joins it to the root, which keeps it as it is.
c.CourseDirectory.source_directory = str(REPO / "solutions")
# Instructor-only files next to a source notebook are never copied to release/, autograded/ or
# feedback/ (nbgrader copies every other file of the assignment's folder).
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "RUBRIC.md", ".gitignore"]

# nbgrader's default is 30 s per cell: too short for a cell that trains a model. A cell that runs
# longer than this is interrupted and scores 0; long training is skipped when NBGRADER_EXECUTION
# is set (autograde, validate), see CONTRIBUTING.md.
c.Execute.timeout = 600
c.ExecutePreprocessor.timeout = 600
# Keep TensorFlow's C++ log lines out of the graded cells' stderr (a cell writing to stderr
# scores 0): the kernels inherit this environment from the nbgrader process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The files students hand in beside the notebook, declared here once: the solutions' own runs save
# them next to the source (gitignored), `release` keeps them out of release/, grading never copies
# them over a student's (nbgrader's meaning of this setting), and the tests read them from here.
c.Autograde.exclude_overwriting = {
    "ex09_mnist": ["mnist_model.keras"],
    "ex10_transfer_learning": ["transfer_model.keras"],
}

# The sandbox of every autograding kernel (autograder/sandbox.py, zygote.py): namespaces of its own, its
# own user id, no network, a read-only system, and these limits per notebook. `autograde` refuses where it
# cannot, unless given --unsafe-no-sandbox.
c.Sandbox.memory_mb = 4096        # resident memory of all its processes together (then killed)
c.Sandbox.address_space_mb = 16384  # address space per process (TensorFlow reserves a lot)
c.Sandbox.cpu_seconds = 1800      # CPU time of the kernel process
c.Sandbox.cell_timeout = 600      # wall time per cell (then interrupted; the next cells still run)
c.Sandbox.interrupt_grace = 30    # seconds an interrupted cell has to stop (then killed, as below)
c.Sandbox.notebook_timeout = 1800  # wall time per notebook (then killed; the cells not run score 0)
c.Sandbox.processes = 512         # processes and threads
c.Sandbox.output_mb = 5.0         # output kept per notebook (the rest is dropped)
c.Sandbox.file_mb = 1024          # largest file a notebook may write
c.Sandbox.tmp_mb = 256            # its private /tmp
c.Sandbox.work_mb = 512           # what it may write in its folder (a tmpfs with a copy of the submission)

# Feedback shows each test's name, result, points and error message, never the hidden tests' code
# nor tracebacks (nbgrader shows both by default, jupyter/nbgrader#917).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "autograder.feedback.HideHiddenTests",
]

# A course folder's own settings (e.g. shorter limits for a test class) come last.
_local = Path(c.CourseDirectory.root) / "autograder_config.py"
if _local.is_file():
    exec(compile(_local.read_text(), str(_local), "exec"), {"c": c})
