"""Log events: a catalogued name and typed fields on the ``LogRecord``, rendered by logsetup's formatters.

``log_event(log, "push.failed", kind="message", reason="Unregistered")`` writes one line with stable
keys (``event=push.failed kind=message reason=Unregistered``) and a human ``msg`` made from the
catalogue's text (ntf_server/observability/logcatalog.py). Field values are plain scalars, enums, paths, or
``ntf_server.observability.sensitive`` values (which print a keyed hash). Raw ``bytes`` are refused: an id handed over
by mistake becomes ``<bytes redacted>`` in production and a ``TypeError`` in tests (``set_strict``), as
does an event missing from the catalogue or with other keys. A log call never raises in production.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from pathlib import PurePath
from typing import Final

from ntf_server.observability.logcatalog import EVENTS, PLAIN
from ntf_server.observability.sensitive import Sensitive

Scalar = str | int | float | bool | None
FieldValue = Scalar | Sensitive | enum.Enum | PurePath
EVENT_ATTR: Final = "ntf_event"
FIELDS_ATTR: Final = "ntf_fields"
REDACTED_BYTES: Final = "<bytes redacted>"



class _Mode:
    strict = False


class EventError(TypeError):
    """A log event the catalogue does not allow (raised only in strict mode: tests)."""


def set_strict(strict: bool) -> None:
    """Tests turn this on: a bad event or a raw bytes value raises instead of being logged redacted."""
    _Mode.strict = strict


def _refuse(message: str) -> None:
    if _Mode.strict:
        raise EventError(message)


def plain(value: object, key: str = "?") -> Scalar:
    """A field value as it is rendered (JSON-compatible), secrets already reduced to tags."""
    if isinstance(value, bytes | bytearray | memoryview):
        _refuse(f"raw bytes in log field {key!r}: wrap it in a ntf_server.observability.sensitive type")
        return REDACTED_BYTES
    if isinstance(value, Sensitive):
        return value.tag
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    if isinstance(value, enum.Enum):
        return plain(value.value, key)
    if isinstance(value, PurePath):
        return str(value)
    _refuse(f"log field {key!r} has type {type(value).__name__}: pass a scalar or a sensitive type")
    return f"<{type(value).__name__}>"  # never its repr: an object may show what it holds


def emit(logger: logging.Logger, name: str, fields: Mapping[str, object], *, text: str | None = None,
         level: int | None = None, exc_info: bool = False) -> None:
    """The general form: ``text`` replaces the catalogue's message, ``level`` its level."""
    spec = EVENTS.get(name)
    if spec is None:
        _refuse(f"log event {name!r} is not in ntf_server/observability/logcatalog.py")
    elif set(fields) != set(spec.keys):
        _refuse(f"log event {name!r} has keys {sorted(fields)}, the catalogue says {sorted(spec.keys)}")
    lvl = level if level is not None else (spec.level if spec else logging.INFO)
    if not logger.isEnabledFor(lvl):
        return
    values = {k: plain(v, k) for k, v in fields.items()}
    if text is None:
        try:
            text = spec.text.format(**{k: "" if v is None else v for k, v in values.items()}) if spec else name
        except (KeyError, IndexError, ValueError):
            text = name
    logger.log(lvl, "%s", text, exc_info=exc_info, stacklevel=3,
               extra={EVENT_ATTR: name, FIELDS_ATTR: values})


def log_event(logger: logging.Logger, name: str, /, **fields: FieldValue) -> None:
    """One catalogued event at its catalogue level."""
    emit(logger, name, fields)


def event_of(record: logging.LogRecord) -> tuple[str, dict[str, Scalar]]:
    """The event name and fields of any record (plain log calls are ``message`` with no fields)."""
    return getattr(record, EVENT_ATTR, PLAIN), getattr(record, FIELDS_ATTR, {})
