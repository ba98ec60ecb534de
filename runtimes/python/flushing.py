"""The agent's telemetry flush (a mixin of :class:`runtimes.python.agent.Agent`).

One batch per call, cut by count and bytes. Over MQTT a PUBACKed batch is only *in flight*
(:meth:`runtimes.python.outbox.Outbox.send`); it leaves the outbox on the server's ack on
``edgefleet/v1/devices/<id>/ack`` (stored; or rejected: resent in halves, and a message rejected
alone is dropped and counted) and is
resent when that ack does not come within ``ack_timeout`` or the connection was replaced. Over
HTTP the 2xx is the server's ack; a payload refusal halves the batch until the refused message
is alone, and only that one is dropped (docs/protocol.md).

On SIGTERM, once the open sketch window is in the outbox, :meth:`TelemetryFlush.final_flush`
sends batches until the outbox is empty, a send fails, or its bound runs out (every request and
MQTT wait is cut to the time left). It never drops anything to finish sooner: what is not
acknowledged by then stays in the outbox and goes at the next start.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from runtimes.python.outbox import Message
from runtimes.python.telemetry import _iso
from runtimes.python.transport import TransportError

PAYLOAD_REFUSED = {400, 409, 413, 415, 422}  # the server refuses this payload: retrying the same bytes cannot help

log = logging.getLogger(__name__)


class TelemetryFlush:
    """Needs ``cfg``, ``outbox``, ``mqtt``, ``http`` and ``last_telemetry_error`` on the agent."""

    cfg: Any
    outbox: Any
    mqtt: Any
    http: Any
    last_telemetry_error: str | None
    _mqtt_epoch: int = 0
    _next_flush: float = 0.0
    _publish_timeout: float = 10.0  # seconds an MQTT publish waits for the broker's PUBACK

    def _on_server_ack(self, payload: bytes) -> None:
        """The server's ack (paho's thread): stored ids leave the outbox, rejected ones are dropped."""
        try:
            ack = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            log.warning("ignored a server ack that is not JSON: %s", exc)
            return
        if not isinstance(ack, dict):
            log.warning("ignored a server ack that is a JSON %s, not an object", type(ack).__name__)
            return
        self.outbox.server_ack(ack)
        if ack.get("result") == "rejected":
            self.last_telemetry_error = f"batch {ack.get('batch_id')} refused by the server: {ack.get('reason')}"[:300]
            log.warning("%s", self.last_telemetry_error)
        self._next_flush = 0.0

    def flush_once(self) -> int:
        """Send one batch; returns how many messages left the outbox (acknowledged or dropped)
        or, over MQTT, went in flight."""
        mqtt_up = self.mqtt is not None and self.mqtt.connected.is_set()
        if mqtt_up:
            if self.mqtt.epoch != self._mqtt_epoch:  # a new connection: what was in flight is resent
                self._mqtt_epoch = self.mqtt.epoch
                self.outbox.requeue_all()
            self.outbox.expire(self.cfg.ack_timeout)
            if self.outbox.inflight() >= self.cfg.max_inflight_batches:
                return 0
        else:
            self.outbox.requeue_all()  # over HTTP the 2xx is the server's ack
        msgs = self.outbox.pending(self.cfg.batch_size)
        if not msgs:
            return 0
        batch, oversized = self._fit(msgs)
        gone = self.outbox.drop([m.id for m in oversized], "oversized") if oversized else 0
        if oversized:
            self.last_telemetry_error = f"{len(oversized)} message(s) over the {self.cfg.batch_bytes}-byte batch limit dropped"
            log.error("%s", self.last_telemetry_error)
        if not batch:
            return gone
        if self.mqtt is not None and self.mqtt.connected.is_set():
            bid = self.outbox.send(batch)  # in flight before the publish, so no ack can come first
            if self.mqtt.publish("telemetry", self._batch(batch, bid), timeout=self._publish_timeout):
                return gone + len(batch)
            self.outbox.unsend(bid)
            log.warning("MQTT publish of batch %s (%d message(s)) was not acknowledged by the broker", bid, len(batch))
        if self.mqtt is None or not self.mqtt.connected.is_set():
            try:
                return gone + self._post(batch)
            except TransportError as exc:
                self.last_telemetry_error = str(exc)[:300]
                log.debug("telemetry POST of %d message(s) failed: %s", len(batch), exc)  # the caller logs it, with its retry
        return gone

    def final_flush(self, seconds: float) -> tuple[int, int, str]:
        """Send what the outbox holds for at most ``seconds``; returns ``(sent, kept, reason)``,
        ``sent`` counting the messages the server acknowledged and ``reason`` why it stopped.
        Logged at INFO as ``final flush: sent N, kept M in the outbox (reason)``."""
        t0 = time.monotonic()
        deadline = t0 + seconds
        before, dropped = self.outbox.depth(), _dropped(self.outbox.stats())
        self.last_telemetry_error = None
        reason = "the final flush is off (final_flush_seconds = 0)" if self.cfg.final_flush_seconds <= 0 else \
            "no time was left of the bound (the loop was still waiting on the server when the signal came)"
        saved = self._publish_timeout
        while seconds > 0:
            if not self.outbox.depth():
                reason = "the outbox is empty"
                break
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = self.outbox.inflight()
                reason = f"the {seconds:g}s bound ran out" + (f"; {waiting} batch(es) sent but not yet acknowledged by the server" if waiting else "")
                break
            self._publish_timeout = left
            try:
                with self.http.bounded(left):
                    moved = self.flush_once()
            finally:
                self._publish_timeout = saved
            if moved:
                continue
            if self.outbox.inflight() and self.mqtt is not None and self.mqtt.connected.is_set():
                time.sleep(min(0.02, max(left, 0.0)))  # the server's acks are on their way
                continue
            reason = self.last_telemetry_error or "nothing was delivered"
            break
        kept = self.outbox.depth()
        lost = _dropped(self.outbox.stats()) - dropped
        sent = before - kept - lost
        log.info("final flush: sent %d, kept %d in the outbox (%s)%s in %.2fs", sent, kept, reason,
                 f"; {lost} dropped as undeliverable" if lost else "", time.monotonic() - t0)
        return sent, kept, reason

    def _batch(self, msgs: list[Message], batch_id: str | None = None) -> dict[str, Any]:
        """The wire batch; ``batch_id`` leads it (the server's ack names it)."""
        return {"batch_id": batch_id or uuid.uuid4().hex, "device_id": self.cfg.device_id, "sent_at": _iso(time.time()),
                "messages": [m.to_wire() for m in msgs]}

    def _fit(self, msgs: list[Message]) -> tuple[list[Message], list[Message]]:
        """The longest prefix of ``msgs`` whose batch is within ``batch_bytes``, and the
        messages of that prefix's span that could never fit any batch on their own."""
        budget = self.cfg.batch_bytes - len(json.dumps(self._batch([]), separators=(",", ":"))) - 8
        batch: list[Message] = []
        oversized: list[Message] = []
        used = 0
        for m in msgs:
            size = len(json.dumps(m.to_wire(), separators=(",", ":"))) + 1  # as the transports encode it, plus a comma
            if size > budget:
                oversized.append(m)
                continue
            if used + size > budget:
                break
            batch.append(m)
            used += size
        return batch, oversized

    def _post(self, msgs: list[Message]) -> int:
        """POST a batch; when the server refuses its payload, halve it until the refused
        message is alone, and drop only that one (counted). Retryable errors propagate once
        nothing was delivered, so the caller backs off."""
        url = f"/api/v1/devices/{self.cfg.device_id}/telemetry"
        stack, done = [msgs], 0
        while stack:  # at most 2n-1 requests for n messages
            part = stack.pop()
            try:
                self.http.post(url, self._batch(part))
                done += self.outbox.ack(m.id for m in part)
            except TransportError as exc:
                if exc.status not in PAYLOAD_REFUSED:
                    if done:
                        self.last_telemetry_error = str(exc)[:300]
                        log.warning("telemetry POST failed after %d message(s) were delivered: %s", done, exc)
                        return done
                    raise
                if len(part) == 1:
                    done += self.outbox.drop([part[0].id], "rejected")
                    self.last_telemetry_error = f"message {part[0].id} ({part[0].kind}) refused by the server: {exc}"[:300]
                    log.error("dropped telemetry %s", self.last_telemetry_error)
                else:
                    mid = len(part) // 2
                    stack += [part[mid:], part[:mid]]
        return done


def _dropped(stats: dict[str, int]) -> int:
    return sum(v for k, v in stats.items() if k.startswith("dropped_"))
