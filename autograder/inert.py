"""A graded notebook made inert before anyone's browser shows it: no script of the student's runs there.

Formgrader shows each autograded notebook as HTML (nbconvert) inside the instructor's Jupyter server,
and feedback pages are made from the same notebook: a student's markdown answer or cell output holding
a script (`<img onerror=...>`, `<script>`, `IPython.display.Javascript`) would run with the instructor's
session and could use the server's API: write any file, start a kernel, run code as the instructor.
nbgrader renders both unsanitized (its formgrade template ignores nbconvert's `sanitize_html`).

So the grader rewrites what it records. Outputs keep only text, PNG, JPEG, GIF and HTML, and an output's
HTML that holds anything outside a list of formatting tags, attributes, styles and addresses (parsed as a
browser parses it, by html5lib and tinycss2) is replaced by its cleaned HTML (bleach, nbconvert's own
sanitizer). Colours and fonts stay (Keras' `model.summary()` is HTML styled so), nothing that places,
hides or loads does. A
markdown cell (as nbconvert renders it) or raw cell (put into the page as it is) that holds any such thing
is shown as written, in a code block; the others are left as they are. The submitted notebook itself stays
untouched in `submitted/`.
"""

from __future__ import annotations

import re

TAGS = frozenset({"a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "div", "dl", "dt", "em",
                  "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s",
                  "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr",
                  "u", "ul"})
ATTRIBUTES = frozenset({"alt", "title", "class", "id", "href", "src", "width", "height", "align", "colspan",
                        "rowspan", "border", "start"})
# CSS properties a `style` attribute may set: colour and type only (text may be made large, but stays in
# the flow); nothing that places, hides or loads (position, display, content, background images...).
STYLES = frozenset({"color", "background-color", "font-family", "font-size", "font-style", "font-weight",
                    "line-height", "overflow-x", "text-align", "text-decoration", "text-decoration-color",
                    "text-decoration-line", "vertical-align", "white-space"})
_CSS_VALUE_TOKENS = frozenset({"ident", "hash", "number", "percentage", "dimension", "string", "whitespace",
                               "literal"})
OUTPUT_TYPES = frozenset({"text/plain", "text/html", "image/png", "image/jpeg", "image/gif"})
_URL_OK = re.compile(r"(?i)^(https?:|mailto:|#|attachment:|data:image/(png|jpeg|gif|webp)[;,])")
_SCRIPT_OR_STYLE = re.compile(r"(?is)<(script|style)\b.*?(</\1\s*>|$)")


def _url_ok(url: str) -> bool:
    """An address that loads or runs nothing but an image or a page: a web or mail address, an anchor,
    an attachment, an image's data, or a file beside the notebook (no scheme)."""
    url = re.sub(r"[\x00-\x20]", "", url)  # browsers ignore these inside a scheme: "java script:"
    return bool(_URL_OK.match(url) or not re.match(r"[a-zA-Z][\w+.-]*:", url))


def active(html: str) -> list[str]:
    """What in `html`, parsed as a browser parses it (html5lib), is outside the lists of tags, attributes
    and addresses: what could run or load something."""
    import html5lib

    found = set()
    for element in html5lib.parseFragment(html, treebuilder="etree", namespaceHTMLElements=False).iter():
        if not isinstance(element.tag, str):  # a comment
            continue
        tag = element.tag.rsplit("}", 1)[-1]  # svg and math elements are namespaced: {http://...}script
        if tag not in TAGS and tag != "DOCUMENT_FRAGMENT":
            found.add(f"tag {_plain(tag)}")
        for name, value in element.attrib.items():
            name = name if isinstance(name, str) else name[1]  # namespaced (svg, math)
            if name == "style":
                found.update(_style_findings(value))
            elif name not in ATTRIBUTES:
                found.add(f"attribute {_plain(name)}")
            elif name in ("href", "src") and not _url_ok(value):
                found.add(f"{name} with a {_plain(value.split(':')[0].lower())}: address")
    return sorted(found)


def _style_findings(style: str) -> list[str]:
    """What in a `style` attribute is outside STYLES, or more than plain values (a url(), a function)."""
    import tinycss2

    found = []
    for item in tinycss2.parse_blocks_contents(style, skip_comments=True, skip_whitespace=True):
        if item.type != "declaration":
            found.append("style that is not CSS" if item.type == "error" else f"style {_plain(item.type)}")
        elif item.lower_name not in STYLES:
            found.append(f"style {_plain(item.lower_name)}")
        elif any(token.type not in _CSS_VALUE_TOKENS for token in item.value):
            found.append(f"style {_plain(item.lower_name)} with a function")
    return found


def _plain(name: str) -> str:
    """A name as it may be said to a terminal, a log or a Markdown cell: letters, digits, - and _ only."""
    return re.sub(r"[^A-Za-z0-9_-]", "", name)[:20] or "?"


def clean(html: str) -> str:
    """`html` with only the listed tags, attributes, styles and addresses (bleach); scripts and style sheets
    go whole, and so does a `style` attribute holding anything outside STYLES."""
    import bleach
    from bleach.css_sanitizer import CSSSanitizer

    def allowed(tag: str, name: str, value: str) -> bool:
        if name == "style":
            return not _style_findings(value)
        return name in ATTRIBUTES and (name not in ("href", "src") or _url_ok(value))

    return bleach.clean(_SCRIPT_OR_STYLE.sub("", html), tags=TAGS, attributes=allowed, strip=True,
                        css_sanitizer=CSSSanitizer(allowed_css_properties=STYLES),
                        protocols=["http", "https", "mailto", "data", "attachment"])


def as_text(source: str, found: list[str]) -> str:
    """Markdown that shows `source` as written, in a code block (escaped: nothing in it is HTML)."""
    return (f"*Shown as written by the grader: its HTML could run code in a browser ({', '.join(found)}).*\n\n"
            + "\n".join("    " + line for line in source.splitlines()))


def make_inert(nb) -> list[str]:
    """Rewrite a graded notebook in place so that showing it runs nothing; one line per cell changed, naming
    each kind of thing removed once (the assignment's own cells hold nothing active: tests/test_inert.py)."""
    from nbconvert.filters import markdown2html

    changed = []
    for index, cell in enumerate(nb.cells):
        label = cell.metadata.get("nbgrader", {}).get("grade_id") or f"#{index + 1}"
        if cell.cell_type in ("markdown", "raw"):  # a raw cell goes into the HTML page as it is
            if found := active(markdown2html(cell.source) if cell.cell_type == "markdown" else cell.source):
                cell.cell_type, cell.source = "markdown", as_text(cell.source, found)
                changed.append(f"cell {label}: its text is shown as written ({', '.join(found)})")
        removed_here: dict[str, None] = {}  # what this cell's outputs lost, each said once, in order
        for output in cell.get("outputs", []):
            data = output.get("data")
            if not data:
                continue
            removed = sorted(set(data) - OUTPUT_TYPES)
            for kind in removed:
                del data[kind]
            if "text/html" in data:
                html = "".join(data["text/html"]) if isinstance(data["text/html"], list) else data["text/html"]
                if found := active(html):
                    data["text/html"] = clean(html)
                    removed.append(f"text/html ({', '.join(found)})")
            if not data:
                data["text/plain"] = "[output removed by the grader: it could run code in a browser]"
            removed_here.update(dict.fromkeys(removed))
        if removed_here:
            changed.append(f"cell {label}: output {', '.join(removed_here)} removed")
    return changed
