"""A plain progress display for long compiles: one line per finished step, with its time.

Line-based on purpose, so CI logs and terminals read the same. ``Progress(quiet=True)`` is
silent; the CLI passes ``--quiet`` through.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import IO, Iterator


class Progress:
    def __init__(self, total: int = 0, *, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.total, self.done = total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.started = time.perf_counter()
        self._pending: list[str] | None = None

    def note(self, message: str) -> None:
        """A detail line; inside a step it is shown after the step's result."""
        if self._pending is not None:
            self._pending.append(message)
        elif not self.quiet:
            print(f"      {message}", file=self.stream, flush=True)

    def _flush(self) -> None:
        pending, self._pending = self._pending or [], None
        for message in pending:
            self.note(message)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.done += 1
        prefix = f"[{self.done}/{self.total}]" if self.total else f"[{self.done}]"
        if not self.quiet:
            print(f"{prefix} {label} ...", end="", file=self.stream, flush=True)
        t0 = time.perf_counter()
        self._pending = []
        try:
            yield
        except BaseException:
            if not self.quiet:
                print(f" failed ({time.perf_counter() - t0:.1f}s)", file=self.stream, flush=True)
            self._flush()
            raise
        if not self.quiet:
            print(f" done ({time.perf_counter() - t0:.1f}s)", file=self.stream, flush=True)
        self._flush()

    def finish(self, message: str) -> None:
        if not self.quiet:
            print(f"{message} in {time.perf_counter() - self.started:.1f}s", file=self.stream, flush=True)
