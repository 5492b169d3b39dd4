"""Sphinx extension of the course's book: every script on a page once.

Sphinx 7.4 adds again, when it starts writing, each inline script that an extension registered
after the HTML builder was made (sphinx-thebe's `const THEBE_JS_URL = ...`, sphinx-togglebutton's
selector): the registry keeps it under the name None, the builder re-adds it under '', and the two
do not compare equal. The second `const` declaration is a SyntaxError in every reader's console
(found by tests/test_browser.py). This drops the repeats from each page's scripts.
"""

from __future__ import annotations

from typing import Any


def scripts_once(app, pagename: str, templatename: str, context: dict[str, Any], doctree) -> None:
    """Keep the first of scripts that have the same source, priority and attributes (body included)."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = (str(script.filename or ""), script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def setup(app) -> dict[str, Any]:
    # after the other handlers of the event, which may add scripts of their own
    app.connect("html-page-context", scripts_once, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
