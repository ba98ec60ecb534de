"""The server's MQTT side: publish retained assignments, ingest telemetry and status.

One paho client (the server account) is enough here: paho's select()-based loop only fails
past 1,024 file descriptors, which a single client never reaches. Messages go from paho's
network thread into a bounded queue; a worker thread validates and stores them, so a slow
database never blocks the network loop, and a malformed payload is counted, never raised.
On every (re)connect the bridge re-publishes each device's newest assignment as retained,
because an embedded broker forgets retained messages when it restarts.
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
        self.queue: "queue.Queue[tuple[str, bytes]]" = queue.Queue(maxsize=100_000)
        self.on_status = on_status
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edgefleet-server", clean_session=True)
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
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()
        self._worker.join(timeout=5)

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            return
        client.subscribe([("edgefleet/v1/devices/+/telemetry", 1), ("edgefleet/v1/devices/+/status", 1)])
        self.connected.set()
        threading.Thread(target=devices.republish_all, args=(self.fleet,), daemon=True).start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self.queue.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            with self.fleet.session() as s:
                self.fleet.bump(s, "mqtt_queue_full")

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                topic, payload = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(topic, payload)
            except Exception as exc:  # noqa: BLE001 - the bridge must outlive any one bad message
                try:
                    with self.fleet.session() as s:
                        self.fleet.bump(s, "mqtt_errors")
                except Exception:  # noqa: BLE001 - the database itself may be down; keep consuming
                    pass
                self.last_error = f"{topic}: {type(exc).__name__}: {exc}"

    def _handle(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) != 5:
            return
        device_id, kind = parts[3], parts[4]
        if kind == "telemetry":
            try:
                ingest.ingest(self.fleet, device_id, payload)
            except FleetError:
                pass  # counted by ingest
        elif kind == "status":
            try:
                devices.record_status(self.fleet, device_id, json.loads(payload))
            except (FleetError, ValueError):
                with self.fleet.session() as s:
                    self.fleet.bump(s, "status_rejected")
                return
            if self.on_status:
                self.on_status()
