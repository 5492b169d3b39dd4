"""nbgrader configuration of the course "Deep Computer Vision with CNNs".

The assignments' sources are the repository's `solutions/<assignment>/<assignment>.ipynb`; every
other step (release, submitted, autograded, feedback, gradebook.db) lives in the course folder:
`$DCV_COURSE_DIR` if set, else `<repo>/_course/` (gitignored). `python -m autograder` writes a
small `nbgrader_config.py` into the course folder that loads this file, so that `nbgrader ...`
and formgrader started from the course folder use the same configuration.
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821  (injected by traitlets when it loads this file)

REPO = Path(__file__).resolve().parent.parent

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

# nbgrader autograde copies every file of the source folder over the student's files. The models that
# the solutions' own runs save next to them must never replace the model a student hands in.
c.Autograde.exclude_overwriting = {
    "ex09_mnist": ["mnist_model.keras"],
    "ex10_transfer_learning": ["transfer_model.keras"],
}
