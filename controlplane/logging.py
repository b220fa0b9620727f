"""Log formatters: one JSON object per line (production), or a plain line for a person at a terminal.

``SENDPLANE_LOG_FORMAT`` (settings.LOGGING) picks one. Both add the
correlation id (an ``extra`` of that name wins over the current request's or
task's, so a worker can name each message's trigger) and every ``extra``
field a call passes (domain, campaign, message_uuid, trigger, status, code).
A line never spans lines: JSON escapes newlines, and the output is ASCII so
no Unicode line separator splits it either.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from controlplane.correlation import correlation_id

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "correlation_id"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The correlation id when known, then the ``extra`` fields, in the order given."""
    fields: dict[str, Any] = {}
    correlation = getattr(record, "correlation_id", None) or correlation_id()
    if correlation:
        fields["correlation_id"] = correlation
    fields.update((key, value) for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_"))
    return fields


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "correlation_id", ...extra, "exc"}``, one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=True, separators=(",", ":"))


class PlainFormatter(logging.Formatter):
    """``time level logger message key=value ...``, the traceback (if any) on the lines after.

    Newlines in the message and fields are escaped: a value from outside cannot forge a line.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        extras = " ".join(f"{key}={value}" for key, value in record_fields(record).items())
        line = f"{line} {extras}" if extras else line
        return line.replace("\r", "\\r").replace("\n", "\\n")
