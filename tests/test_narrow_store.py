"""Components take the part of the store they use (STYLE 10), never the whole `Store` (store/base.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_type_hints

import pytest

import ntf_server
from ntf_server.handlers import NtfHandlers
from ntf_server.maintenance import Housekeeping
from ntf_server.push.pipeline import PushPipeline
from ntf_server.store.base import Store
from ntf_server.subscriber.pool import SubscriberPool

PACKAGE = Path(ntf_server.__file__).resolve().parent
WHOLE = {"Store", "RedisStore"}


def _members(proto: type) -> set[str]:
    return {name for k in proto.__mro__ if k.__module__.startswith("ntf_server")
            for name in vars(k) if not name.startswith("_")}


@pytest.mark.parametrize("component", [NtfHandlers, Housekeeping, PushPipeline, SubscriberPool])
def test_component_takes_a_narrower_protocol_than_store(component: type) -> None:
    proto = get_type_hints(component.__init__)["store"]
    assert getattr(proto, "_is_protocol", False), f"{component.__name__} takes {proto!r}, not a protocol"
    assert _members(proto) < _members(Store), f"{component.__name__} takes the whole store"


def test_no_parameter_outside_the_store_is_the_whole_store() -> None:
    """Only the store package itself (and server.py, which connects it, in a variable) names the whole."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arg) and isinstance(node.annotation, ast.Name) and node.annotation.id in WHOLE:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.arg}: {node.annotation.id}")
    assert offenders == []
