"""Telemetry from flows: the device runtime's sketches and sampled predictions, sent over HTTP.

A MiNiFi agent is an enrolled device (kind ``minifi``), so the processor posts telemetry with
that device's token to ``/api/v1/devices/<id>/telemetry``, through the same durable outbox
(``runtimes.python.outbox``) and the same batching and refusal rules
(``runtimes.python.flushing.TelemetryFlush``) as the device agent: what the server did not
acknowledge stays in the outbox for the next flush, and a processor restart loses nothing.
The flush runs on the processor's own trigger (``maybe_flush``), never on a thread of its own:
MiNiFi C++ shares one interpreter between processors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgefleet.protocol import MAX_BATCH_BYTES, MAX_BATCH_MESSAGES
from runtimes.python.flushing import TelemetryFlush
from runtimes.python.outbox import Outbox
from runtimes.python.scorer import Prediction
from runtimes.python.telemetry import Telemetry
from runtimes.python.transport import Http, TransportError


@dataclass(frozen=True)
class FlowTelemetryConfig:
    """Where and how often; times in seconds."""

    server: str
    device_id: str
    token: str
    outbox_path: Path
    sample_rate: float = 0.1
    include_features: bool = True
    window_seconds: float = 3600.0
    flush_seconds: float = 10.0
    batch_size: int = MAX_BATCH_MESSAGES
    batch_bytes: int = MAX_BATCH_BYTES
    ack_timeout: float = 10.0
    max_inflight_batches: int = 4


class FlowTelemetry(TelemetryFlush):
    def __init__(self, cfg: FlowTelemetryConfig) -> None:
        self.cfg = cfg
        cfg.outbox_path.parent.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(cfg.outbox_path)
        self.mqtt = None
        self.http = Http(cfg.server, cfg.token)
        self.last_telemetry_error = None
        self.telemetry = Telemetry(self.outbox, cfg.device_id, sample_rate=cfg.sample_rate,
                                   include_features=cfg.include_features, window_seconds=cfg.window_seconds)
        self._last = time.monotonic()

    def on_prediction(self, manifest: Mapping[str, Any], record: Mapping[str, Any], features: np.ndarray, pred: Prediction,
                      entity_id: str | None = None) -> None:
        self.telemetry.on_prediction(manifest, record, features, pred, entity_id)

    def maybe_flush(self) -> int:
        """Flush when ``flush_seconds`` passed since the last one; a failed send leaves everything in the outbox."""
        if time.monotonic() - self._last < self.cfg.flush_seconds:
            return 0
        return self.flush()

    def flush(self) -> int:
        """Close the sketch window and send batches until the outbox is empty or a send fails."""
        self._last = time.monotonic()
        self.telemetry.flush_window()
        sent = 0
        try:
            while True:
                n = self.flush_once()
                sent += n
                if n == 0:
                    return sent
        except TransportError as exc:
            self.last_telemetry_error = str(exc)[:300]
            return sent

    def close(self) -> None:
        self.outbox.close()
