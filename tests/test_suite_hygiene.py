"""The test suite itself: every folder can be run alone or with any other, and no check accepts anything."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_folders_collect_together() -> None:
    """Each folder has a conftest.py; a test importing `from conftest import …` gets whichever was imported
    first, so `pytest tests/apns tests/e2e` used to fail with an ImportError. Shared helpers live in
    modules with their own names."""
    folders = sorted(str(p) for p in TESTS.iterdir() if (p / "conftest.py").exists())
    assert len(folders) >= 2
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-n", "0", *folders],
        capture_output=True, text=True, cwd=TESTS.parent, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_no_test_accepts_any_exception() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "raises"
                    and node.args and isinstance(node.args[0], ast.Name)
                    and node.args[0].id in {"Exception", "BaseException"}):
                offenders.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert offenders == []
