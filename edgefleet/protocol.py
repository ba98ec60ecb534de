"""Limits of the device protocol (docs/protocol.md) that the device and the fleet server share.

The device keeps within them when it builds telemetry, so a batch the broker acknowledged is
one the server will store; the server enforces them at its boundary.
"""

from __future__ import annotations

MAX_BATCH_MESSAGES = 500          # messages per telemetry batch
MAX_BATCH_BYTES = 256 * 1024      # bytes of one telemetry batch as sent (JSON, UTF-8)
MAX_FEATURE_CHARS = 256           # characters of one string feature value kept in telemetry
MAX_FEATURES = 512                # feature values kept per prediction record

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_MESSAGES", "MAX_FEATURES", "MAX_FEATURE_CHARS"]
