"""autograder/inert.py: a graded notebook holds nothing that runs in the browser of whoever looks at it.

Formgrader shows autograded notebooks inside the instructor's Jupyter server (whose API writes files and
runs code), and feedback pages are made from them; nbgrader renders both without sanitizing.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbconvert.filters import markdown2html

from autograder.inert import active, as_text, clean, make_inert

REPO = Path(__file__).resolve().parents[1]

HOSTILE = {  # markdown a student could write, each of which runs code when rendered (or when clicked)
    "img onerror": "<img src=x onerror=alert(1)>",
    "script": "My answer <script>alert(1)</script>",
    "split script": "<scr<script>ipt>alert(1)</script>",
    "markdown link": "[see](javascript:alert(1))",
    "mixed case link": "[see](JaVaScRiPt:alert(1))",
    "tab in scheme": "<a href='java\tscript:alert(1)'>x</a>",
    "svg": "<svg><script>alert(1)</script></svg>",
    "svg onload": "<svg onload=alert(1)>",
    "math mutation": "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "iframe": "<iframe srcdoc='<script>alert(1)</script>'></iframe>",
    "data page": '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    "style": '<div style="background:url(javascript:alert(1))">x</div>',
    "form": "<form action=javascript:alert(1)><button>go</button></form>",
    "object": "<object data=javascript:alert(1)></object>",
    "link in attribute name": "<p [x](javascript:alert(1))>hi</p>",
    "style that covers the page": '<div style="position:fixed;top:0;left:0;width:100%;height:100%">Score: 18/18</div>',
    "style hidden in a colour": '<span style="color: red; background-image: url(https://example.com/x.png)">x</span>',
    "style function": '<span style="color: expression(alert(1))">x</span>',
    "style with a rule": '<span style="color: red; @import url(x.css)">x</span>',
}

ORDINARY = {  # what students write: nothing active, left as written
    "prose": "Training keeps **every** layer's output for the backward pass; `x < 3` and $a < b$.",
    "lists and code": "- one\n- two & three\n\n```python\nx = 1 < 2\n\nprint(x)\n```",
    "links and images": "# Why\n\nSee [the book](https://example.com) and ![a plot](figure.png) "
                        "![inline](data:image/png;base64,iVBORw0KGgo=)",
    "table": "| a | b |\n|---|---|\n| 1 | 2 |",
    "some html": "Line<br>break, H<sub>2</sub>O, 10<sup>3</sup> &nbsp; <b>done</b>",
}


# What Keras 3 displays for `model.summary()` in a notebook (rich's HTML, captured from a kernel): colour
# and type in `style` attributes, which a graded notebook keeps as they are.
KERAS_SUMMARY = (
    '<pre style="white-space:pre;overflow-x:auto;line-height:normal;font-family:Menlo,\'DejaVu Sans Mono\','
    'consolas,\'Courier New\',monospace">│ dense (<span style="color: #0087ff; text-decoration-color: #0087ff">'
    'Dense</span>) │ <span style="font-weight: bold"> Total params: </span>'
    '<span style="color: #00af00; text-decoration-color: #00af00">10</span> (40.00 B)\n</pre>\n')


@pytest.mark.parametrize("markdown", HOSTILE.values(), ids=HOSTILE.keys())
def test_what_could_run_is_found_and_shown_as_written(markdown):
    """Is each hostile answer found, and once shown as written (or cleaned), is nothing active left?"""
    html = markdown2html(markdown)
    found = active(html)
    assert found, html
    shown = markdown2html(as_text(markdown, found))
    assert active(shown) == [], shown
    assert active(clean(html)) == [], clean(html)


@pytest.mark.parametrize("markdown", ORDINARY.values(), ids=ORDINARY.keys())
def test_ordinary_answers_are_left_alone(markdown):
    assert active(markdown2html(markdown)) == []


def test_a_keras_summary_keeps_its_colours():
    """Is the HTML of a model's summary left as it is (every student of exercises 3 and 7 shows one)?"""
    assert active(KERAS_SUMMARY) == []
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("model.summary()", outputs=[
        nbformat.v4.new_output("display_data", data={"text/html": KERAS_SUMMARY, "text/plain": "Model"})])]
    assert make_inert(nb) == [] and nb.cells[0].outputs[0].data["text/html"] == KERAS_SUMMARY


def test_clean_keeps_the_allowed_styles_and_drops_a_style_holding_more():
    kept = '<span style="color: #00af00; font-weight: bold">10</span>'
    assert clean(kept) == kept.replace('bold"', 'bold;"')  # bleach ends each declaration with ";"
    assert clean('<span style="color: red; position: fixed">x</span>') == "<span>x</span>"


def test_a_finding_says_nothing_the_student_chose():
    """A finding goes into a Markdown note, the score table and a terminal: only plain names, never the
    student's text (which could be a Markdown link or a terminal escape)."""
    found = active('<p [x](javascript:alert(1))="" a\x1b[31m=1><a href="javascript:[a](javascript:alert(1))">x</a></p>')
    assert all(set(text) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-: ")
               for text in found), found


def test_a_graded_notebook_is_made_inert():
    """Outputs keep text, images and clean HTML; markdown and raw cells with anything active are shown as
    written; the rest is untouched."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(ORDINARY["prose"]),
        nbformat.v4.new_markdown_cell(HOSTILE["img onerror"]),
        nbformat.v4.new_raw_cell("<script>alert(1)</script>"),
        nbformat.v4.new_raw_cell("plain notes"),
        nbformat.v4.new_code_cell("display(...)", outputs=[
            nbformat.v4.new_output("display_data", data={"text/html": "<b>ok</b> <img src=x onerror=alert(1)>",
                                                         "text/plain": "<IPython.core.display.HTML object>"}),
            nbformat.v4.new_output("display_data", data={"application/javascript": "alert(1)"}),
            nbformat.v4.new_output("display_data", data={"image/svg+xml": "<svg onload=alert(1)/>",
                                                         "image/png": "iVBORw0KGgo="}),
            nbformat.v4.new_output("execute_result", data={"text/html": "<table><tr><td>1</td></tr></table>"},
                                   execution_count=1),
            nbformat.v4.new_output("stream", text="<script>printed text is escaped</script>"),
        ]),
    ]
    before = nbformat.writes(nb)
    changed = make_inert(nb)
    assert len(changed) == 3, changed  # two cells shown as written, one line for the outputs of the third
    assert changed[2] == "cell #5: output text/html (attribute onerror), application/javascript, image/svg+xml removed"
    assert nb.cells[0].source == ORDINARY["prose"] and nb.cells[3].source == "plain notes"
    assert nb.cells[1].source.startswith("*Shown as written") and nb.cells[2].cell_type == "markdown"
    html, js, svg, table, stream = nb.cells[4].outputs
    assert html.data["text/html"] == '<b>ok</b> <img src="x">'
    assert js.data == {"text/plain": "[output removed by the grader: it could run code in a browser]"}
    assert set(svg.data) == {"image/png"}
    assert table.data["text/html"] == "<table><tr><td>1</td></tr></table>"
    assert stream.text == "<script>printed text is escaped</script>"
    nbformat.validate(nb)
    assert nbformat.writes(nb) != before


@pytest.mark.parametrize("source", sorted((REPO / "solutions").glob("*/*.ipynb")), ids=lambda p: p.parent.name)
def test_the_assignments_own_cells_hold_nothing_active(source):
    """The grader makes every markdown cell inert, the assignment's too: none of them may need it."""
    nb = nbformat.read(source, as_version=4)
    assert make_inert(nb) == []
