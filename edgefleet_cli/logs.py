"""The one logging configuration of the ``edgefleet`` command (stdlib ``logging``, to stderr).

``--log-level`` (default INFO for the long-running ``server`` and ``agent run``, WARNING for the
rest) and ``--log-format text|json``. JSON is one object a line: ``ts`` (UTC ISO 8601), ``level``,
``logger``, ``message`` and, when a record carries an exception, ``exc`` (its formatted traceback).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "edgefleet-cli"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


def default_level(command: str | None, subcommand: str | None = None) -> str:
    long_running = command == "server" or (command in ("agent", "device") and subcommand == "run")
    return "INFO" if long_running else "WARNING"


def configure(level: str, fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Replace this command's handler on the root logger; returns it (tests read its stream)."""
    if level.upper() not in LEVELS:
        raise ValueError(f"--log-level: {level!r} is not one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"--log-format: {fmt!r} is not one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # third-party chatter stays at WARNING unless DEBUG was asked for
    for name in ("amqtt", "transitions", "waitress", "urllib3", "alembic"):
        logging.getLogger(name).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
    return handler
