"""Root logging for every command (LOGGER_LEVEL, LOGGER_ENCODING of CONTRACT §1).

Lines about a connection carry ``extra={"conn_id": ..., "user_id": ...}``; both
encodings show those fields, so an operator can grep one connection's story.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from tornado_gw.settings import Settings

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces it."""


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES}


class ConsoleFormatter(logging.Formatter):
    """``2026-01-01 12:00:00.123 INFO tornado_gw.server: message conn_id=c1 user_id=u1``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname} {record.name}: {record.getMessage()}"
        fields = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Install one stderr handler on the root logger; calling again replaces it.

    Handlers installed by others (pytest's caplog, for one) are left in place.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(handler)
    handler = _OurHandler()
    handler.setFormatter(JsonFormatter() if settings.logger_encoding == "json" else ConsoleFormatter())
    root.addHandler(handler)
    root.setLevel(settings.logger_level.upper())
