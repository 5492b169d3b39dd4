"""Feedback without the hidden tests' code: a preprocessor for nbgrader's `generate_feedback`.

nbgrader renders the autograded notebook, hidden tests and tracebacks included (jupyter/nbgrader#917).
`HideHiddenTests` (registered in nbgrader_config.py, after GetGrades) removes the hidden-test regions
from every cell, reduces every error to its one line `Name: message` (tracebacks quote the failing
line, a hidden test's source), and opens each graded test cell's output with its name, pass/fail and
points.
"""

from __future__ import annotations

import nbformat
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

HIDDEN_NOTE = "# (hidden tests: run when your notebook was graded; their code is not shown)"


class HideHiddenTests(NbGraderPreprocessor):
    """Strip hidden tests and tracebacks; label each test cell with its result."""

    begin = Unicode("### BEGIN HIDDEN TESTS").tag(config=True)
    end = Unicode("### END HIDDEN TESTS").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if self.begin in cell.source:
            kept, inside = [], False
            for line in cell.source.splitlines():
                if self.begin in line:
                    inside = True
                    kept.append(line[: len(line) - len(line.lstrip())] + HIDDEN_NOTE)
                elif self.end in line:
                    inside = False
                elif not inside:
                    kept.append(line)
            cell.source = "\n".join(kept)
        if cell.cell_type != "code":
            return cell, resources
        for output in cell.outputs:
            if output.output_type == "error":
                output.traceback = [f"{output.ename}: {output.evalue}"]
        if utils.is_grade(cell) and not utils.is_solution(cell):
            meta = cell.metadata.nbgrader
            score, points = meta.get("score"), meta.get("points")
            passed = score is not None and points is not None and float(score) >= float(points)
            label = (f"{meta['grade_id']}: {'passed' if passed else 'failed'} "
                     f"({0 if score is None else float(score):g} of {float(points or 0):g} point(s))\n")
            cell.outputs.insert(0, nbformat.v4.new_output("stream", name="stdout", text=label))
        return cell, resources
