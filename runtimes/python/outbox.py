"""A bounded, crash-safe telemetry outbox on SQLite (WAL), delivering at least once.

Every message gets an idempotent id (uuid4) when it is accepted; the server deduplicates by
it, so redelivery after a lost acknowledgement is harmless. A message leaves the outbox only
when ``ack`` is called with its id, after the server's acknowledgement: the 2xx of an HTTP POST,
or over MQTT the server's ack on the device's ``ack`` topic, published after the commit.

A broker's PUBACK is not that ack (Mosquitto PUBACKs on receipt and forgets what it held when
it is killed), so over MQTT a published batch only moves to *in flight* (:meth:`send`): it
stays in the outbox, is not handed out again by :meth:`pending`, and goes back to pending when
no server ack came within the ack timeout (:meth:`expire`) or the connection was replaced
(:meth:`requeue_all`). The in-flight state lives in memory: after a restart everything in the
outbox is pending again, which is the same rule (resend; the server deduplicates by id).

The outbox is bounded by message count and bytes. When full, the oldest ``prediction``
messages go first (they are samples; sketches and outcomes are not), then the oldest of any
kind. Every drop is counted per kind in the ``counters`` table and reported in the device
status: nothing disappears silently. A message the agent can never deliver (larger than any
batch may be, or refused by the server on its own) is removed with ``drop(ids, reason)``,
counted as ``dropped_<reason>``. Commits use WAL with ``synchronous=NORMAL``: an accepted
message survives a crash of the process; an OS crash or power cut can lose the last few
commits (SQLite's documented trade-off), never corrupt the file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    body TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Message:
    id: str
    kind: str
    created: float
    body: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "created": self.created, "body": self.body}


class Outbox:
    def __init__(self, path: str | os.PathLike[str], *, max_messages: int = 200_000, max_bytes: int = 128 * 1024 * 1024) -> None:
        self.path = os.fspath(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

        self._inflight: dict[str, tuple[float, list[str]]] = {}  # batch id -> (monotonic send time, message ids)
        self._inflight_ids: dict[str, str] = {}                  # message id -> batch id
        self._cap: dict[str, int] = {}  # message id -> largest batch it may go in (halved on each rejection)
        self._slow_rounds = 0  # expiries since the last server ack: the ack timeout doubles with each (at most 8x)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- in flight (MQTT) --------------------------------------------------------------------
    def pending(self, limit: int = 500) -> list[Message]:
        """The oldest messages not in flight, at most ``limit``, and no more than the smallest
        cap of those taken (a message of a rejected batch goes in a batch half that size)."""
        with self._lock:
            skip = len(self._inflight_ids)
            rows = self._db.execute("SELECT id, kind, created, body FROM outbox ORDER BY seq LIMIT ?", (limit + skip,)).fetchall()
            out: list[Any] = []  # sqlite rows
            for r in rows:
                if r[0] in self._inflight_ids:
                    continue
                limit = min(limit, self._cap.get(r[0], limit))
                if len(out) >= limit:
                    break
                out.append(r)
        return [Message(r[0], r[1], r[2], json.loads(r[3])) for r in out]

    def send(self, msgs: Iterable[Message], batch_id: str | None = None) -> str:
        """Mark ``msgs`` in flight as one batch (before publishing it); returns its batch id."""
        batch_id = batch_id or uuid.uuid4().hex
        ids = [m.id for m in msgs]
        with self._lock:
            self._inflight[batch_id] = (time.monotonic(), ids)
            for i in ids:
                self._inflight_ids[i] = batch_id
        return batch_id

    def unsend(self, batch_id: str) -> None:
        """The batch was not published after all: its messages are pending again."""
        with self._lock:
            self._unsend_locked(batch_id)

    def _unsend_locked(self, batch_id: str) -> list[str]:
        _, ids = self._inflight.pop(batch_id, (0.0, []))
        for i in ids:
            if self._inflight_ids.get(i) == batch_id:
                del self._inflight_ids[i]
        return ids

    def expire(self, timeout: float) -> int:
        """Batches in flight for ``timeout`` seconds without a server ack go back to pending;
        returns how many messages did. While no ack arrives the timeout doubles with each expiry
        (up to 8x), so a slow server is not buried under resends; any server ack resets it."""
        with self._lock:
            cutoff = time.monotonic() - timeout * (2 ** min(self._slow_rounds, 3))
            old = [b for b, (t, _) in self._inflight.items() if t <= cutoff]
            if old:
                self._slow_rounds += 1
            return sum(len(self._unsend_locked(b)) for b in old)

    def requeue_all(self) -> int:
        """Every batch in flight goes back to pending (the connection it was sent on is gone)."""
        with self._lock:
            return sum(len(self._unsend_locked(b)) for b in list(self._inflight))

    def inflight(self) -> int:
        """How many batches are in flight."""
        return len(self._inflight)

    def server_ack(self, ack: Mapping[str, Any]) -> int:
        """Apply the server's ack ``{"batch_id", "result": "stored"|"rejected", "ids", "reason"}``:
        stored ids leave the outbox. A rejection is final for the batch: a batch of several
        messages is resent in halves (as the HTTP path does), and a message rejected alone is
        dropped and counted (``dropped_rejected``), never resent. Returns how many messages left."""
        ids = [i for i in ack.get("ids") or [] if isinstance(i, str)]
        bid = ack.get("batch_id")
        rejected = ack.get("result") == "rejected"
        with self._lock:
            self._slow_rounds = 0
            if isinstance(bid, str) and bid in self._inflight:
                if rejected:
                    ids = list(dict.fromkeys(self._inflight[bid][1] + ids))  # a payload the server could not read names no ids
                self._unsend_locked(bid)
            if rejected and len(ids) > 1:
                cap = len(ids) // 2
                for i in ids:
                    self._cap[i] = min(self._cap.get(i, cap), cap)
                    b = self._inflight_ids.get(i)
                    if b is not None:
                        self._unsend_locked(b)
                return 0
            named = set(ids)
            for b in {self._inflight_ids[i] for i in named if i in self._inflight_ids}:
                if named.issuperset(self._inflight[b][1]):
                    self._unsend_locked(b)  # a batch sent without a batch id, or sent twice
            for i in named:
                self._inflight_ids.pop(i, None)
        if rejected:
            return self.drop(ids, "rejected")
        return self.ack(ids)

    # -- writing ---------------------------------------------------------------------------
    def put(self, kind: str, body: Mapping[str, Any]) -> str:
        return self.put_many(kind, [body])[0]

    def put_many(self, kind: str, bodies: Iterable[Mapping[str, Any]]) -> list[str]:
        """Accept messages in one transaction; returns their ids."""
        now = time.time()
        rows = []
        for body in bodies:
            text = json.dumps(body, separators=(",", ":"), allow_nan=False)
            rows.append((uuid.uuid4().hex, kind, now, text, len(text)))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO outbox (id, kind, created, body, size) VALUES (?, ?, ?, ?, ?)", rows)
                self._count += len(rows)
                self._bytes += sum(r[4] for r in rows)
                self._enforce_bounds()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
                self._count, self._bytes = int(row[0]), int(row[1])
                raise
        return [r[0] for r in rows]

    def _enforce_bounds(self) -> None:
        if self._count <= self.max_messages and self._bytes <= self.max_bytes:
            return
        for kind_filter in ("WHERE kind = 'prediction'", ""):
            while self._count > self.max_messages or self._bytes > self.max_bytes:
                excess = max(self._count - self.max_messages, 1)
                victims = self._db.execute(
                    f"SELECT seq, kind, size FROM outbox {kind_filter} ORDER BY seq LIMIT ?", (max(excess, 64),)
                ).fetchall()
                if not victims:
                    break
                dropped: dict[str, int] = {}
                taken = []
                for seq, kind, size in victims:
                    if self._count <= self.max_messages and self._bytes <= self.max_bytes:
                        break
                    taken.append((seq,))
                    self._count -= 1
                    self._bytes -= size
                    dropped[kind] = dropped.get(kind, 0) + 1
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", taken)
                for kind, n in dropped.items():
                    self._db.execute(
                        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                        (f"dropped_{kind}", n),
                    )

    # -- reading ---------------------------------------------------------------------------
    def peek(self, limit: int = 500) -> list[Message]:
        with self._lock:
            rows = self._db.execute("SELECT id, kind, created, body FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [Message(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def ack(self, ids: Iterable[str]) -> int:
        return self._remove(ids, None)

    def drop(self, ids: Iterable[str], reason: str) -> int:
        """Remove messages that can never be delivered, counted as ``dropped_<reason>``."""
        return self._remove(ids, reason)

    def _remove(self, ids: Iterable[str], drop_reason: str | None) -> int:
        ids = list(ids)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = self._delete_locked(ids)
                if removed and drop_reason is not None:
                    self._db.execute(
                        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                        (f"dropped_{drop_reason}", removed),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._recount()
                raise
        return removed

    def _delete_locked(self, ids: list[str]) -> int:
        removed = 0
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            sizes = self._db.execute(f"SELECT COALESCE(SUM(size), 0), COUNT(*) FROM outbox WHERE id IN ({marks})", chunk).fetchone()
            self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
            self._bytes -= int(sizes[0])
            self._count -= int(sizes[1])
            for mid in chunk:
                self._cap.pop(mid, None)
            removed += int(sizes[1])
        return removed

    def _recount(self) -> None:
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

    def depth(self) -> int:
        return self._count

    def stats(self) -> dict[str, int]:
        with self._lock:
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return {"depth": self._count, "bytes": self._bytes, **{k: int(v) for k, v in counters.items()}}
