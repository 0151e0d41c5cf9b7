"""The store imports nothing of the parts above it (ntf_server/README.md "The parts"): the push policy's
types it needs are in ntf_server/policy_types.py."""

from __future__ import annotations

import ast
from pathlib import Path

import ntf_server.store

ABOVE = ("ntf_server.push", "ntf_server.subscriber", "ntf_server.handlers", "ntf_server.transport",
         "ntf_server.admin", "ntf_server.server")


def test_store_imports_nothing_above_it() -> None:
    found = []
    for path in Path(ntf_server.store.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.startswith(ABOVE)]
    assert found == []
