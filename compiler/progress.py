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

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"      {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.done += 1
        prefix = f"[{self.done}/{self.total}]" if self.total else f"[{self.done}]"
        if not self.quiet:
            print(f"{prefix} {label} ...", end="", file=self.stream, flush=True)
        t0 = time.perf_counter()
        try:
            yield
        except BaseException:
            if not self.quiet:
                print(f" failed ({time.perf_counter() - t0:.1f}s)", file=self.stream, flush=True)
            raise
        if not self.quiet:
            print(f" done ({time.perf_counter() - t0:.1f}s)", file=self.stream, flush=True)

    def finish(self, message: str) -> None:
        if not self.quiet:
            print(f"{message} in {time.perf_counter() - self.started:.1f}s", file=self.stream, flush=True)
