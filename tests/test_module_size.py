"""Small modules (ntf_server/README.md STYLE): a module of the server or the APNs client over 300 lines says
why in its docstring ("Why one module of about N lines: ..." or "Over 300 lines: ..."), so a long module is a
decision someone wrote down, not an accident."""

from __future__ import annotations

import ast
import pathlib
import re

import apns
import ntf_server

LIMIT = 300
REASON = re.compile(r"(?i)why one module|over 300 lines")


def test_every_module_over_300_lines_says_why() -> None:
    roots = [pathlib.Path(ntf_server.__file__).parent, pathlib.Path(apns.__file__).parent]
    long_ = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            text = path.read_text()
            if text.count("\n") > LIMIT and not REASON.search(ast.get_docstring(ast.parse(text)) or ""):
                long_.append(f"{path.relative_to(root.parent)}: {text.count(chr(10))} lines")
    assert long_ == [], "split these or say why in the docstring"
