"""``last_error`` of a background part (MQTT bridge and ingest, monitor, reconciler), logged once.

A background loop that fails keeps failing the same way every pass; assigning the same message
again logs nothing, so ``edgefleet server`` shows a failure once, a new failure once more, and
the recovery (assigning ``None``) once at INFO.
"""

from __future__ import annotations

import logging
from typing import Any


class LoggedError:
    """A data descriptor: ``obj.last_error = "reason"`` stores it and logs it when it changed.

    The logger is the owner class's module; ``obj.part`` (default the class name) starts the line.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}_value"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(self.slot)

    def __set__(self, obj: Any, value: str | None) -> None:
        old = obj.__dict__.get(self.slot)
        obj.__dict__[self.slot] = value
        if value == old:
            return
        log = logging.getLogger(type(obj).__module__)
        part = getattr(obj, "part", type(obj).__name__)
        if value is None:
            log.info("%s: recovered (was: %s)", part, old)
        else:
            log.error("%s: %s", part, value)
