"""protocol/ is sans-IO: no module imports an I/O library (also enforced by ruff's banned-api)."""

from __future__ import annotations

import ast
import pathlib

import ntf_server.protocol

BANNED = {"asyncio", "ssl", "socket", "redis", "selectors", "trio", "anyio"}


def test_protocol_modules_import_no_io() -> None:
    root = pathlib.Path(ntf_server.protocol.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in BANNED]
    assert len(list(root.glob("*.py"))) >= 7
    assert offenders == []
