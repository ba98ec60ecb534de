"""WriteCallback (stand-in of MiNiFi C++'s nifiapi.processorbase)."""

from __future__ import annotations

from typing import Any


class WriteCallback:
    def __init__(self, content: bytes) -> None:
        self.content = content

    def process(self, output_stream: Any) -> int:
        output_stream.write(self.content)
        return len(self.content)
