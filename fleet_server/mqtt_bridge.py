"""The server's MQTT side: publish retained assignments, ingest telemetry and status.

One paho client (the server account) is enough here: paho's select()-based loop only fails
past 1,024 file descriptors, which a single client never reaches. Messages go from paho's
network thread into a queue bounded in bytes; a worker thread drains it in groups, validates
and stores a whole group in one transaction, and only after that commit sends the PUBACKs
(paho's manual ack), so a telemetry batch the broker handed over is never acknowledged before
it is stored. The session is persistent (clean_session=False), so a broker keeps what arrives
while the server restarts. A malformed payload is counted, never raised. On every (re)connect
the bridge re-publishes each device's newest assignment as retained, because an embedded broker
forgets retained messages when it restarts.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from fleet_server import devices, ingest
from fleet_server.core import Fleet
from fleet_server.errors import FleetError

SERVER_USER = "edgefleet-server"


class MqttBridge:
    def __init__(self, fleet: Fleet, url: str, *, username: str | None = SERVER_USER, password: str | None = None,
                 on_status: Any = None) -> None:
        parts = urlsplit(url)
        self.fleet, self.host, self.port = fleet, parts.hostname or "127.0.0.1", parts.port or 1883
        self.connected = threading.Event()
        self.queue: "queue.Queue[tuple[str, bytes, int, int]]" = queue.Queue()
        self.queued_bytes = 0
        self.max_queued_bytes = 256 * 1024 * 1024
        self._bytes_lock = threading.Lock()
        self.on_status = on_status
        self.last_error: str | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgefleet-server", clean_session=False, manual_ack=True)
        if username:
            self.client.username_pw_set(username, password if password is not None else fleet.secrets.mqtt_password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a, **k: self.connected.clear()
        self.client.on_message = self._on_message
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="mqtt-ingest", daemon=True)

    def start(self) -> "MqttBridge":
        self.fleet.publish = self.publish
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # the worker stores and acknowledges what is queued, then exits
        self._worker.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            return
        client.subscribe([("edgefleet/v1/devices/+/telemetry", 1), ("edgefleet/v1/devices/+/status", 1)])
        self.connected.set()
        threading.Thread(target=devices.republish_all, args=(self.fleet,), daemon=True).start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        payload = bytes(msg.payload)
        with self._bytes_lock:
            full = self.queued_bytes + len(payload) > self.max_queued_bytes
            if not full:
                self.queued_bytes += len(payload)
        if full:  # not acknowledged: the broker redelivers it after a reconnect
            self._count("mqtt_queue_full")
            return
        self.queue.put((msg.topic, payload, msg.mid, msg.qos))

    def _count(self, name: str) -> None:
        try:
            with self.fleet.session() as s:
                self.fleet.bump(s, name)
        except Exception as exc:  # noqa: BLE001 - the database may be down; the count is best effort
            self.last_error = f"{name}: {exc}"

    def _drain(self, first: tuple[str, bytes, int, int], limit: int = 200) -> list[tuple[str, bytes, int, int]]:
        group = [first]
        size = len(first[1])
        while len(group) < limit and size < 8 * 1024 * 1024:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            group.append(item)
            size += len(item[1])
        with self._bytes_lock:
            self.queued_bytes -= size
        return group

    def _work(self) -> None:
        from sqlalchemy.exc import DBAPIError

        pause = 0.5
        while not (self._stop.is_set() and self.queue.empty()):
            try:
                first = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            group = self._drain(first)
            try:
                statuses = self._store(group)
                pause = 0.5
            except DBAPIError as exc:  # the database is unreachable: keep the group, unacknowledged, and retry
                self.last_error = f"database: {exc.__class__.__name__}: {str(exc)[:200]}"
                for item in group:
                    self.queue.put(item)
                with self._bytes_lock:
                    self.queued_bytes += sum(len(i[1]) for i in group)
                if self._stop.wait(pause):
                    return
                pause = min(pause * 2, 30.0)
                continue
            except Exception as exc:  # noqa: BLE001 - store one by one so one bad message cannot block the rest
                self.last_error = f"group of {len(group)}: {type(exc).__name__}: {exc}"
                statuses = 0
                for item in group:
                    try:
                        statuses += self._store([item])
                    except Exception as exc2:  # noqa: BLE001 - counted, acknowledged, never retried forever
                        self.last_error = f"{item[0]}: {type(exc2).__name__}: {exc2}"
                        self._count("mqtt_errors")
                        self._ack([item])
            else:
                self._ack(group)
            if statuses and self.on_status:
                self.on_status()

    def _ack(self, group: list[tuple[str, bytes, int, int]]) -> None:
        for _topic, _payload, mid, qos in group:
            if qos > 0:
                self.client.ack(mid, qos)

    def _store(self, group: list[tuple[str, bytes, int, int]]) -> int:
        """Validate and store a group in one transaction; returns how many statuses it held."""
        statuses = 0
        with self.fleet.session() as s:
            rows: list[dict[str, Any]] = []
            for topic, payload, _mid, _qos in group:
                parts = topic.split("/")
                if len(parts) != 5:
                    continue
                device_id, kind = parts[3], parts[4]
                if kind == "telemetry":
                    try:
                        rows.extend(ingest.parse_batch(self.fleet, device_id, payload))
                    except FleetError as exc:
                        ingest.reject(self.fleet, exc, s)
                elif kind == "status":
                    try:
                        devices.record_status(self.fleet, device_id, json.loads(payload), s)
                        statuses += 1
                    except (FleetError, ValueError):
                        self.fleet.bump(s, "status_rejected")
            ingest.insert_rows(self.fleet, rows, s)
        return statuses
