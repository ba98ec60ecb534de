"""The device <-> server protocol (docs/protocol.md): limits, topic names and the binning rule.

The device keeps within the limits when it builds telemetry, so a batch the broker acknowledged
is one the server will store; the server enforces them at its boundary. Topics are built only
here. The binning rule is shared by the compiler's reference statistics, the device's sketches
and the server's histograms, so a value falls into the same bin everywhere.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Literal

MAX_BATCH_MESSAGES = 500          # messages per telemetry batch
MAX_BATCH_BYTES = 256 * 1024      # bytes of one telemetry batch as sent (JSON, UTF-8)
MAX_FEATURE_CHARS = 256           # characters of one string feature value kept in telemetry
MAX_FEATURES = 512                # feature values kept per prediction record

TOPIC_ROOT = "edgefleet/v1"
SERVER_USERNAME = "edgefleet-server"       # the fleet server's own broker account
DeviceLeaf = Literal["assignment", "ack", "telemetry", "status"]
DEVICE_INGEST_TOPICS = (f"{TOPIC_ROOT}/devices/+/telemetry", f"{TOPIC_ROOT}/devices/+/status")
SERVER_PING_PREFIX = f"{TOPIC_ROOT}/server/ping/"


def device_topic(device_id: str, leaf: DeviceLeaf) -> str:
    """``edgefleet/v1/devices/<id>/<leaf>``: assignment and ack are server -> device, the others device -> server."""
    return f"{TOPIC_ROOT}/devices/{device_id}/{leaf}"


def alert_topic(model: str) -> str:
    """``edgefleet/v1/alerts/<model>``: monitoring events, not retained."""
    return f"{TOPIC_ROOT}/alerts/{model}"


def bin_index(edges: Sequence[float], value: float) -> int:
    """The bin of ``value`` among ``k`` sorted edges: 0 is ``x < e1``, ``i`` is ``e_i <= x < e_(i+1)``,
    ``k`` is ``x >= ek`` (``bisect_right``; ``numpy.searchsorted(edges, x, side="right")`` agrees)."""
    return bisect.bisect_right(edges, value)


__all__ = [
    "DEVICE_INGEST_TOPICS", "MAX_BATCH_BYTES", "MAX_BATCH_MESSAGES", "MAX_FEATURES", "MAX_FEATURE_CHARS",
    "SERVER_PING_PREFIX", "SERVER_USERNAME", "TOPIC_ROOT", "DeviceLeaf", "alert_topic", "bin_index", "device_topic",
]
