"""The server's MQTT side: publish retained assignments, ingest telemetry and status.

Ingest (:class:`IngestQueue`) is one worker thread behind a queue bounded in bytes. Each queued
message carries its own ``ack`` callback; the worker stores a group of messages in one
transaction and calls the acks only after that commit, so nothing is acknowledged before it is
stored. Two paths feed it:

- **Mosquitto** (``--mqtt``): the bridge's paho client (the server account, persistent session,
  manual acks) receives the devices' publishes; ``ack`` sends paho's PUBACK to Mosquitto, which
  keeps an unacknowledged message in the server's session across a server restart.
- **Embedded broker**: the broker lives in the server process, so a SIGKILL takes its queues
  with it. Its connection handler therefore hands a device's telemetry/status publish to the
  same queue and sends the device's PUBACK only when ``ack`` fires, after the commit
  (:mod:`fleet_server.mqtt.broker`). The device keeps the batch in its outbox until then; the bridge
  does not subscribe to the device topics on this path (``ingest_topics=False``).

A broker's PUBACK is not what the device waits for: Mosquitto PUBACKs on receipt and loses
what it held when it is SIGKILLed. After each commit the worker therefore publishes the
**server ack** of every telemetry batch of the group (:attr:`IngestQueue.on_acks`, QoS 1, not
retained) on the sender's own ``edgefleet/v1/devices/<id>/ack``: ``{"batch_id", "result":
"stored", "ids"}``, or ``"rejected"`` with the reason for a batch that can never be stored (that
is final, so the device drops and counts it instead of resending). The device deletes a batch
from its outbox only on that ack and resends one that got none (docs/protocol.md). Acks are
published on both brokers, so the device protocol is one.

A message that cannot be stored is that message's rejection, never the fleet's outage: a
payload that does not parse (any exception, RecursionError and UnicodeDecodeError included) or
fails validation is counted (``telemetry_rejected``/``telemetry_oversized``/``status_rejected``),
noted in :attr:`IngestQueue.last_error`, and acknowledged; on Mosquitto the bridge also clears
a retained copy of it, so a restart does not replay it (an empty payload, which is how MQTT
clears a retained message, is ignored and not counted). When a group's transaction fails the
worker asks whether the database is down (the connection was invalidated, or a fresh
connection cannot run ``SELECT 1`` and a no-op write, so SQLite locked past its busy timeout
counts as down): then the group stays queued, unacknowledged, and is retried with backoff;
otherwise the group is stored message by message, each stored one acknowledged at once and
each failing one rejected (after a few retries for a transient ``OperationalError`` such as a
deadlock), so one message can never block a group.

A dead subscription (a broker that silently dropped the server's session) is found by a
self-ping: every ``ping_seconds`` the bridge publishes a nonce on
``edgefleet/v1/server/ping/<nonce>`` and must receive it back within ``ping_timeout``; if
neither it nor any other message arrived meanwhile, it reconnects and subscribes again. On every (re)connect the bridge re-publishes each device's
newest assignment as retained, because an embedded broker forgets retained messages when it
restarts.
"""

from __future__ import annotations

import functools
import itertools
import json
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.protocol import DEVICE_INGEST_TOPICS, SERVER_PING_PREFIX, SERVER_USERNAME, TOPIC_ROOT, device_topic
from fleet_server import devices, ingest
from fleet_server.core import Fleet
from fleet_server.errors import FleetError
from fleet_server.failures import LoggedError
from fleet_server.mqtt.parse_pool import ParsePool, default_processes

SERVER_CLIENT_ID = "edgefleet-server"

Ack = Callable[[], None]
Item = tuple[str, bytes, Ack]
ServerAck = tuple[str, dict[str, Any]]  # (device id, ack payload)
_PARSING = object()  # parse-ahead: claimed, not parsed yet
_BATCH_ID = re.compile(rb'^\s*\{\s*"batch_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')


def _batch_id(payload: bytes) -> str | None:
    """The batch's ``batch_id`` when it leads the JSON (as the agents send it), cheaply."""
    m = _BATCH_ID.match(payload[:120])
    return m.group(1).decode() if m else None


def rejection_ack(payload: bytes, reason: str) -> dict[str, Any]:
    """The ack telling a device its batch was refused for good: its batch id and message ids
    when the payload names them (best effort: a payload that does not parse names none)."""
    bid, ids = _batch_id(payload), []
    try:
        doc = json.loads(payload)
        if isinstance(doc, dict):
            if isinstance(doc.get("batch_id"), str):
                bid = doc["batch_id"][:64]
            msgs = doc.get("messages")
            if isinstance(msgs, list):
                ids = [m["id"] for m in msgs[:5000] if isinstance(m, dict) and isinstance(m.get("id"), str) and len(m["id"]) <= 64]
    except Exception:  # noqa: BLE001 - not JSON, too deep, not UTF-8: the ack names what it can
        pass
    return {"batch_id": bid, "result": "rejected", "reason": reason[:300], "ids": ids}


def route(topic: str) -> tuple[str, str] | None:
    """``(device_id, kind)`` for ``edgefleet/v1/devices/<id>/telemetry|status``, else None."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{TOPIC_ROOT}/devices" or parts[4] not in ("telemetry", "status"):
        return None
    return parts[3], parts[4]


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class IngestQueue:
    """Stores device telemetry and status messages; acknowledges each one only after its commit."""

    part = "mqtt ingest"
    last_error = LoggedError()  # each distinct failure is logged once (fleet_server.failures)

    GROUP_MESSAGES = 200
    GROUP_BYTES = 8 * 1024 * 1024
    # On SQLite a group's rows go to the database every FLUSH_ROWS, in its one transaction, not all
    # at its end: the worker waited for the parser process 0.78 s of a 2.1 s bench phase (80,000
    # records) with one insert per group, 0.44 s with these. On PostgreSQL the group stays one COPY:
    # 1,000-row COPYs (a savepoint and a round trip each) took the insert from 1.07 to 1.81 s there.
    FLUSH_ROWS = 1000
    TRANSIENT_RETRIES = 3

    def __init__(self, fleet: Fleet, *, on_status: Callable[[], Any] | None = None,
                 max_queued_bytes: int = 256 * 1024 * 1024, parse_processes: int | None = None) -> None:
        self.fleet = fleet
        self.on_status = on_status
        self.queue: "queue.Queue[Item]" = queue.Queue()
        self.queued_bytes = 0
        self.max_queued_bytes = max_queued_bytes
        self._bytes_lock = threading.Lock()
        self.database_down = False
        self.on_rejected: Callable[[str], Any] | None = None  # topic of a rejected message (the bridge clears it if retained)
        # The server's application ack: called with [(device id, ack)] after each commit, from
        # the worker thread; the bridge publishes them on the devices' ack topics.
        self.on_acks: Callable[[list[ServerAck]], Any] | None = None
        self.acks_sent = 0
        self._pending_counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="mqtt-ingest", daemon=True)
        # parse-ahead: telemetry batches still queued are parsed and validated on a second thread
        # while the worker is inside the database (the drivers release the GIL there)
        self._ahead: dict[int, Any] = {}  # id(payload) -> _PARSING or (payload, device id, rows or the exception)
        self._ahead_bytes = 0
        self._ahead_lock = threading.Condition()
        self._parser = threading.Thread(target=self._parse_ahead, name="mqtt-ingest-parse", daemon=True)
        # ... or, when there is a core for it, in a child process (parse_pool.py): a telemetry batch
        # goes to it as it is queued (at most CHILD_BYTES of payloads waiting there at once; beyond that,
        # when the worker takes the batch), and the worker waits for its rows with the GIL released
        self.pool = ParsePool(default_processes() if parse_processes is None else parse_processes)
        self._child: dict[int, tuple[Future[tuple[bool, Any]], int]] = {}  # id(payload) -> (the child's answer, bytes)
        self._child_bytes = 0
        self._started = False

    def start(self) -> "IngestQueue":
        if not self._started:
            self._started = True
            self._worker.start()
            self.pool.warm_up()
            # The thread parses itself only on PostgreSQL: COPY and INSERT .. SELECT release the GIL for
            # whole statements, so the parsing overlaps them. sqlite3's executemany releases and re-takes
            # the GIL at every row; with a busy parser thread beside it each re-take waits for the parser's
            # switch interval (measured: the stored rate fell), so on SQLite the thread only hands batches
            # to the parser process, and without one the worker parses its own group.
            if self.fleet.engine.dialect.name == "postgresql":
                self._parser.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Store and acknowledge what is queued (unless the database is down), then exit."""
        self._stop.set()
        if self._started:
            self._worker.join(timeout=timeout)
        self.pool.broken = True
        self.pool.close()

    def submit(self, topic: str, payload: bytes, ack: Ack) -> bool:
        """Queue one message; False (nothing queued, nothing acknowledged) when the queue is full."""
        with self._bytes_lock:
            if self.queued_bytes + len(payload) > self.max_queued_bytes:
                full = True
            else:
                full = False
                self.queued_bytes += len(payload)
        if full:  # counted by the worker's next transaction: no database call on a network thread
            with self._bytes_lock:
                self._pending_counts["mqtt_queue_full"] = self._pending_counts.get("mqtt_queue_full", 0) + 1
            return False
        self._to_child(topic, payload)  # before it is queued: the worker finds the child's answer or parses itself
        self.queue.put((topic, payload, ack))
        return True

    # -- parse-ahead -------------------------------------------------------------------------
    AHEAD_MESSAGES = GROUP_MESSAGES  # at most this many batches, and AHEAD_BYTES of their payloads, parsed ahead (bounds memory)
    AHEAD_BYTES = 16 * 1024 * 1024
    CHILD_TIMEOUT = 30.0  # seconds for one batch in the parser process before it is given up
    CHILD_BYTES = 64 * 1024 * 1024

    def _to_child(self, topic: str, payload: bytes, bound: bool = True) -> None:
        """Hand a telemetry batch to the parser process, if there is one (and room, with ``bound``)."""
        if self.pool.broken or not payload or id(payload) in self._child:
            return
        r = route(topic)
        if r is None or r[1] != "telemetry" or (bound and self._child_bytes + len(payload) > self.CHILD_BYTES):
            return
        child = self.pool.submit(self.fleet.cfg.max_telemetry_bytes, r[0], payload)
        if child is not None:
            with self._ahead_lock:
                self._child[id(payload)] = (child, len(payload))
                self._child_bytes += len(payload)

    def _from_child(self, payload: bytes) -> tuple[bool, Any] | None:
        """The parser process's (ok, rows or exception) for this batch; None when it has none."""
        with self._ahead_lock:
            got = self._child.pop(id(payload), None)
            if got is not None:
                self._child_bytes -= got[1]
        if got is None:
            return None
        try:
            return got[0].result(timeout=self.CHILD_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the process failed (died, hung), not the batch: parse here
            self.pool.give_up(exc)
            self.last_error = f"parser process: {_short(exc)}; parsing in-process"
            with self._ahead_lock:
                self._child.clear()
                self._child_bytes = 0
            return None

    def _parse_ahead(self) -> None:
        """Parse queued telemetry before the worker takes it. An item is claimed under the queue's
        own mutex, so the worker (whose ``get`` takes that mutex) either finds the claim or the
        item was already its own; a result the worker no longer wants is dropped, so nothing stays
        behind. Every result is what ``ingest.parse_batch`` returns or raises, used only for the
        same payload object from the same device."""
        while not self._stop.is_set():
            if not self.pool.broken:  # the parser process has the batches
                self._stop.wait(0.05)
                continue
            claimed: list[tuple[int, str, bytes]] = []
            with self._ahead_lock:
                room = self.AHEAD_MESSAGES - len(self._ahead)
            if room > 0 and self._ahead_bytes < self.AHEAD_BYTES:
                with self.queue.mutex, self._ahead_lock:
                    for topic, payload, _ack in itertools.islice(self.queue.queue, self.AHEAD_MESSAGES):
                        if len(claimed) >= room or self._ahead_bytes >= self.AHEAD_BYTES:
                            break
                        r = route(topic)
                        if r is None or r[1] != "telemetry" or not payload or id(payload) in self._ahead:
                            continue
                        self._ahead[id(payload)] = _PARSING
                        self._ahead_bytes += len(payload)
                        claimed.append((id(payload), r[0], payload))
            if not claimed:
                self._stop.wait(0.005)
                continue
            for key, device_id, payload in claimed:
                try:
                    result: Any = ingest.parse_tuples(self.fleet.cfg.max_telemetry_bytes, device_id, payload)
                except Exception as exc:  # noqa: BLE001 - handed to the worker, which rejects the batch as before
                    result = exc
                with self._ahead_lock:
                    if self._ahead.get(key) is _PARSING:
                        self._ahead[key] = (payload, device_id, result)
                    # else the worker took the item meanwhile and parsed it itself: this result is dropped
                    self._ahead_lock.notify_all()

    def _parsed(self, device_id: str, payload: bytes) -> list[ingest.Row]:
        """``ingest.parse_tuples`` of the payload, from the parser process or the parse-ahead
        thread when either has it."""
        child = self._from_child(payload)
        if child is not None:
            if not child[0]:
                raise child[1]
            rows: list[ingest.Row] = child[1]
            return rows
        key = id(payload)
        with self._ahead_lock:
            if self._ahead.get(key) is _PARSING:  # being parsed right now: wait briefly rather than parse twice
                self._ahead_lock.wait_for(lambda: self._ahead.get(key) is not _PARSING, timeout=1.0)
            got = self._ahead.pop(key, None)
            if got is not None:
                self._ahead_bytes -= len(payload)
        if isinstance(got, tuple) and got[0] is payload and got[1] == device_id:
            if isinstance(got[2], BaseException):
                raise got[2]
            rows = got[2]
            return rows
        return ingest.parse_tuples(self.fleet.cfg.max_telemetry_bytes, device_id, payload)

    # -- worker ------------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        try:
            with self.fleet.session() as s:
                self.fleet.bump(s, name)
        except Exception as exc:  # noqa: BLE001 - the database may be down; the count is best effort
            self.last_error = f"{name}: {exc}"

    def _drain(self, first: Item) -> list[Item]:
        group = [first]
        size = len(first[1])
        while len(group) < self.GROUP_MESSAGES and size < self.GROUP_BYTES:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            group.append(item)
            size += len(item[1])
        return group

    def _release(self, items: list[Item]) -> None:
        with self._bytes_lock:
            self.queued_bytes -= sum(len(i[1]) for i in items)

    def _requeue(self, items: list[Item]) -> None:
        for item in items:  # the bytes were never released, so the bound still counts them
            self.queue.put(item)

    @staticmethod
    def _ack(items: list[Item]) -> None:
        for _topic, _payload, ack in items:
            try:
                ack()
            except Exception:  # noqa: BLE001 - a closed connection: the sender redelivers, ids dedupe
                pass

    def _work(self) -> None:
        pause = 0.5
        while True:
            try:
                first = self.queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            group = self._drain(first)
            try:
                statuses, acks = self._store(group)
            except Exception as exc:  # noqa: BLE001 - classified below: outage or one bad message
                if self._classify(exc) == "down":
                    if self._outage(group, exc, pause):
                        return
                    pause = min(pause * 2, 30.0)
                    continue
                self.last_error = f"group of {len(group)}: {_short(exc)}"
                statuses, left, acks = self._store_each(group)
                self._send_acks(acks)
                if left:
                    if self._outage(left, None, pause):
                        return
                    pause = min(pause * 2, 30.0)
                    continue
            else:
                self._release(group)
                self._ack(group)
                self._send_acks(acks)
            pause = 0.5
            if self.database_down and (self.last_error or "").startswith("database:"):
                self.last_error = None  # the outage is over: logged as recovered
            self.database_down = False
            if statuses and self.on_status:
                self.on_status()

    def _outage(self, items: list[Item], exc: BaseException | None, pause: float) -> bool:
        """The database is down: keep ``items`` queued, unacknowledged; True if stopping."""
        self.database_down = True
        if exc is not None:
            self.last_error = f"database: {_short(exc)}"
        self._requeue(items)
        if not self._stop.wait(pause):
            return False
        return self._probe_fails()  # stopping: drain what can be stored, leave the rest unacknowledged

    def _send_acks(self, acks: list[ServerAck]) -> None:
        if acks and self.on_acks is not None:
            try:
                self.on_acks(acks)
                self.acks_sent += len(acks)
            except Exception as exc:  # noqa: BLE001 - an unsent ack only means the device resends; ids dedupe
                self.last_error = f"ack: {_short(exc)}"

    def _store_each(self, group: list[Item]) -> tuple[int, list[Item], list[ServerAck]]:
        """Store one by one: ack each stored message, reject (count + ack) each one that cannot
        be stored. Returns (statuses stored, the items left unacknowledged because the database
        went down on the way, the server acks of what was stored or rejected)."""
        statuses = 0
        acks: list[ServerAck] = []
        for i, item in enumerate(group):
            for attempt in range(self.TRANSIENT_RETRIES + 1):
                try:
                    n, item_acks = self._store([item])
                    statuses += n
                    acks += item_acks
                    break
                except Exception as exc:  # noqa: BLE001 - classified: outage, transient, or this message's fault
                    verdict = self._classify(exc)
                    if verdict == "down":
                        self.last_error = f"database: {_short(exc)}"
                        return statuses, group[i:], acks
                    if verdict == "transient" and attempt < self.TRANSIENT_RETRIES:
                        time.sleep(0.2 * (attempt + 1))
                        continue
                    self.last_error = f"{item[0]}: {_short(exc)}"
                    self._reject(item)
                    r = route(item[0])
                    if r is not None and r[1] == "telemetry" and item[1]:
                        acks.append((r[0], rejection_ack(item[1], f"not storable: {_short(exc)}")))
                    break
            self._release([item])
            self._ack([item])
        return statuses, [], acks

    def _reject(self, item: Item) -> None:
        r = route(item[0])
        self._count(f"{r[1] if r else 'mqtt'}_rejected")
        self._rejected(item[0])

    def _rejected(self, topic: str) -> None:
        if self.on_rejected is not None:
            try:
                self.on_rejected(topic)
            except Exception:  # noqa: BLE001 - clearing a retained copy is best effort
                pass

    def _probe_fails(self) -> bool:
        """True when a fresh connection cannot run a write statement: the database is down (or,
        on SQLite, locked past its busy timeout), which is no single message's fault."""
        from sqlalchemy import text

        try:
            with self.fleet.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                conn.execute(text("UPDATE counters SET value = value WHERE name = ''"))  # needs the write lock; 0 rows
                conn.rollback()
            return False
        except Exception:  # noqa: BLE001 - any failure to run SELECT 1 is an outage
            return True

    def _classify(self, exc: BaseException) -> str:
        """"down" (connection failed), "transient" (lock/deadlock, database fine) or "bad"."""
        from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

        if not isinstance(exc, SQLAlchemyError):
            return "bad"
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return "down"
        if self._probe_fails():
            return "down"
        return "transient" if isinstance(exc, OperationalError) else "bad"

    def _store(self, group: list[Item]) -> tuple[int, list[ServerAck]]:
        """Validate and store a group in one transaction; returns how many statuses it held and
        the server acks to publish once the commit is done.
        Parsing and validation failures are rejections counted here; only database errors raise."""
        with self._bytes_lock:
            pending, self._pending_counts = self._pending_counts, {}
        try:
            return self._store_group(group, pending)
        except BaseException:
            with self._bytes_lock:
                for name, n in pending.items():
                    self._pending_counts[name] = self._pending_counts.get(name, 0) + n
            raise

    def _store_group(self, group: list[Item], pending: dict[str, int]) -> tuple[int, list[ServerAck]]:
        from sqlalchemy.exc import SQLAlchemyError

        statuses = 0
        acks: list[ServerAck] = []
        with self.fleet.session() as s:
            for name, n in pending.items():
                self.fleet.bump(s, name, n)
            rows: list[ingest.Row] = []
            flush = self.FLUSH_ROWS if self.fleet.engine.dialect.name == "sqlite" else 1 << 62
            # the group's status senders in one SELECT (record_status's s.get then reads the
            # session's identity map), not one per status; held here so the map keeps them
            senders = [r[0] for r in (route(item[0]) for item in group) if r is not None and r[1] == "status"]
            loaded = devices.preload(s, senders)
            for topic, payload, _ack in group:  # the group's batches not yet with the parser process go now
                self._to_child(topic, payload, bound=False)
            for topic, payload, _ack in group:
                r = route(topic)
                if r is None:
                    continue
                device_id, kind = r
                if not payload:
                    continue  # an empty payload clears a retained message; it is not a message
                if kind == "telemetry":
                    try:
                        parsed = self._parsed(device_id, payload)
                        rows.extend(parsed)
                        acks.append((device_id, {"batch_id": _batch_id(payload), "result": "stored",
                                                 "ids": [r[0] for r in parsed]}))
                        if len(rows) >= flush:  # stored while the parser process reads the next batches
                            ingest.insert_tuples(self.fleet, rows, s)
                            rows = []
                    except FleetError as exc:
                        self.last_error = f"{topic}: {exc}"
                        ingest.reject(self.fleet, exc, s)
                        self._rejected(topic)
                        acks.append((device_id, rejection_ack(payload, str(exc))))
                    except Exception as exc:  # noqa: BLE001 - RecursionError, UnicodeDecodeError, ...
                        self.last_error = f"{topic}: {_short(exc)}"
                        ingest.reject(self.fleet, FleetError(f"body: {_short(exc)}"), s)
                        self._rejected(topic)
                        acks.append((device_id, rejection_ack(payload, f"body: {_short(exc)}")))
                    continue
                try:
                    devices.record_status(self.fleet, device_id, json.loads(payload), s)
                    statuses += 1
                except SQLAlchemyError:
                    raise
                except Exception as exc:  # noqa: BLE001 - FleetError, not JSON, RecursionError, ...
                    self.last_error = f"{topic}: {_short(exc)}"
                    self.fleet.bump(s, "status_rejected")
                    self._rejected(topic)
            ingest.insert_tuples(self.fleet, rows, s)
            del loaded
        return statuses, acks


class MqttBridge:
    """The server's paho client: publishes assignments, receives device messages into an
    :class:`IngestQueue` (its own, or ``ingest`` shared with an embedded broker)."""

    part = "mqtt bridge"
    _connect_error = LoggedError()  # why the broker cannot be reached; logged once, and on reconnect

    def __init__(self, fleet: Fleet, url: str, *, username: str | None = SERVER_USERNAME, password: str | None = None,
                 on_status: Any = None, ingest: IngestQueue | None = None, ingest_topics: bool = True,
                 ping_seconds: float = 15.0, ping_timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        self.fleet, self.host, self.port = fleet, parts.hostname or "127.0.0.1", parts.port or 1883
        self.connected = threading.Event()
        self._own_ingest = ingest is None
        self.ingest = ingest if ingest is not None else IngestQueue(fleet, on_status=on_status)
        self.ingest_topics = ingest_topics
        self.ingest.on_acks = self._publish_acks  # on both brokers: one device protocol
        if ingest_topics:
            # A rejected message a device published retained would come back on every resubscribe
            # (each server restart) and be counted again: the server clears the retained copy.
            self.ingest.on_rejected = self._clear_retained
        self.ping_seconds, self.ping_timeout = ping_seconds, ping_timeout  # read live: tests may shorten them
        self.reconnects = 0
        self.last_ping_ok: bool | None = None  # None: no self-ping since the last (re)connect
        self._ping_nonce: str | None = None
        self._ping_seen = threading.Event()
        self._last_rx = 0.0  # monotonic time of the last message received, pings included
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=SERVER_CLIENT_ID, clean_session=False, manual_ack=True)
        if username:
            self.client.username_pw_set(username, password if password is not None else fleet.secrets.mqtt_password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self._stop = threading.Event()
        self._client_lock = threading.Lock()
        self._pinger = threading.Thread(target=self._ping_loop, name="mqtt-ping", daemon=True)

    # kept for callers that looked at the bridge's own queue (bench/ingest.py)
    @property
    def queue(self) -> "queue.Queue[Item]":
        return self.ingest.queue

    @property
    def last_error(self) -> str | None:
        error: str | None = self.ingest.last_error
        return error

    def readiness(self) -> tuple[bool, str]:
        """``/readyz`` broker check: connected, and the last self-ping (if any since connecting) came back."""
        where = f"{self.host}:{self.port}"
        if not self.connected.is_set():
            return False, self._connect_error or f"not connected to {where}"
        if self.last_ping_ok is False:
            return False, f"connected to {where}, but the last self-ping was not received"
        return True, f"connected to {where}" + ("; self-ping ok" if self.last_ping_ok else "")

    def start(self) -> "MqttBridge":
        self.fleet.publish = self.publish
        self.ingest.start()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._pinger.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._own_ingest:
            self.ingest.stop()  # stores and acknowledges what is queued, then exits
        self._pinger.join(timeout=self.ping_timeout + 2)
        with self._client_lock:
            self.client.disconnect()
            self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any = None, reason: Any = None, properties: Any = None) -> None:
        self.connected.clear()
        if not self._stop.is_set() and getattr(reason, "is_failure", False):
            self._connect_error = f"disconnected from {self.host}:{self.port}: {reason}"

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        """paho does not pass the cause: a plain TCP connect names it (refused, unreachable, ...)."""
        import socket

        try:
            socket.create_connection((self.host, self.port), timeout=2).close()
            cause = "the MQTT connection failed"
        except OSError as exc:
            cause = exc.strerror or str(exc) or type(exc).__name__
        self._connect_error = f"cannot connect to {self.host}:{self.port}: {cause}; retrying"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self._connect_error = f"{self.host}:{self.port} refused the server's login: {reason}"
            return
        self._connect_error = None
        topics = [(f"{SERVER_PING_PREFIX}+", 1)] + ([(t, 1) for t in DEVICE_INGEST_TOPICS] if self.ingest_topics else [])
        client.subscribe(topics)
        self.last_ping_ok = None
        self.connected.set()
        threading.Thread(target=devices.republish_all, args=(self.fleet,), daemon=True).start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._last_rx = time.monotonic()
        if msg.topic.startswith(SERVER_PING_PREFIX):
            if msg.qos > 0:
                client.ack(msg.mid, msg.qos)
            if msg.topic[len(SERVER_PING_PREFIX):] == self._ping_nonce:
                self._ping_seen.set()
            return
        if self._stop.is_set():
            # Stopping: the ingest queue drains what it holds, so nothing new is taken (a device kept
            # publishing held every stop at its 10 s drain timeout). Not acknowledged: the broker
            # redelivers it, or the device resends it after its ack timeout.
            return
        ack = functools.partial(self._paho_ack, msg.mid, msg.qos)
        if route(msg.topic) is None:
            ack()  # not ours to store (the ACL lets only edgefleet/v1/... through): acknowledge, drop
            return
        self.ingest.submit(msg.topic, bytes(msg.payload), ack)  # full: not acknowledged, the broker redelivers

    def _publish_acks(self, acks: list[ServerAck]) -> None:
        """The server acks of one commit, QoS 1, not retained, each on its device's own topic.
        paho queues them while disconnected; a lost one only means the device resends."""
        for device_id, body in acks:
            self.client.publish(device_topic(device_id, "ack"), json.dumps(body, separators=(",", ":")), qos=1, retain=False)

    def _clear_retained(self, topic: str) -> None:
        self.client.publish(topic, b"", qos=1, retain=True)

    def _paho_ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self.client.ack(mid, qos)

    # -- dead-subscription detection -----------------------------------------------------------
    def ping_once(self) -> bool:
        """Publish a nonce to our own ping topic; True if it came back within ``ping_timeout``."""
        self._ping_seen.clear()
        self._ping_nonce = secrets.token_hex(8)
        self.client.publish(SERVER_PING_PREFIX + self._ping_nonce, b"", qos=1)
        return self._ping_seen.wait(self.ping_timeout)

    def _ping_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.25):
            if time.monotonic() - last < self.ping_seconds or not self.connected.is_set():
                continue
            last = time.monotonic()
            ok = self.ping_once()
            if ok or self._stop.is_set() or not self.connected.is_set():
                self.last_ping_ok = ok or self.last_ping_ok
                continue
            if self._last_rx > last:
                self.last_ping_ok = True
                continue  # a backlog delays the ping, but messages arrive: the subscription is alive
            self.last_ping_ok = False
            self.ingest.last_error = f"mqtt: own ping not received within {self.ping_timeout} s; reconnecting"
            self.ingest._count("mqtt_ping_lost")
            self._reconnect()

    def _reconnect(self) -> None:
        """Drop the connection and connect again; on_connect subscribes afresh."""
        with self._client_lock:
            if self._stop.is_set():
                return
            self.reconnects += 1
            self.connected.clear()
            self.client.disconnect()
            self.client.loop_stop()
            self.client.connect_async(self.host, self.port, keepalive=30)
            self.client.loop_start()
