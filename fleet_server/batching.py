"""Adaptive micro-batching: concurrent small scoring requests share one backend call.

    batcher = MicroBatcher(scorer)
    preds = batcher.score(records)       # what scorer.score_many(records) returns, for this request alone

Each request encodes its own records in its own thread first (``Scorer.encode_many``), so an
invalid record raises ``ScoringInputError`` naming the field in *its* request only: it never
enters a batch and never affects the other requests. The encoded rows are then queued; one of
the waiting threads (the leader) concatenates what is queued, runs the backend once
(``Scorer.probabilities``) and hands each request its own slice, which ``Scorer.predictions``
turns into Predictions (a non-finite probability fails that request alone). The slices are
bit-identical to scoring each request alone: the backends score rows independently
(tests/fleet_server/serving/test_batching.py checks it against ``score_many``).

Adaptive, with a bounded wait:

- A request that finds no batch running becomes the leader at once. If the previous batch held
  a single request (light load), it runs immediately: one client never waits.
- Under concurrency (the previous batch held several requests) the leader waits at most
  ``max_wait`` seconds (default 2 ms) for more requests, or until ``max_rows`` rows are queued.
- Requests that arrive while a batch is in the backend queue up; when it finishes, the first of
  them becomes the next leader (leadership is handed over, so no thread serves others' batches
  indefinitely and no extra thread exists).
- Requests of more than ``max_rows`` rows bypass the queue: they are a batch already.

Failure: any exception of the backend call (a ``BundleError`` from a failing artifact, anything
else) is raised in every request of that batch; a request waits at most ``timeout`` seconds and
then raises ``BatchTimeout``. Leadership is handed over in a ``finally``, so a failing batch never
strands the requests queued behind it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np

from fleet_server.errors import FleetError
from runtimes.python.scorer import Prediction, Scorer


class BatchTimeout(FleetError):
    status = 503


class _Request:
    __slots__ = ("features", "rows", "done", "leader", "proba", "error")

    def __init__(self, features: np.ndarray, rows: Sequence[Mapping[str, Any]]) -> None:
        self.features = features
        self.rows = rows
        self.done: threading.Event | None = None  # a follower's; a leader waits for nobody
        self.leader = False          # set (with done) when this request must lead the next batch
        self.proba: np.ndarray | None = None
        self.error: BaseException | None = None


class MicroBatcher:
    """Batches concurrent ``score`` calls on one Scorer (one per (model, version))."""

    def __init__(self, scorer: Scorer, *, max_wait: float = 0.002, max_rows: int = 64, timeout: float = 30.0) -> None:
        self.scorer = scorer
        self.max_wait = max_wait      # seconds a leader waits for more requests, only under concurrency
        self.max_rows = max_rows      # rows per backend call; larger requests bypass the queue
        self.timeout = timeout        # seconds a request waits for its batch before BatchTimeout
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Request] = []
        self._running = False         # a leader owns the queue (waiting for it to fill, or in the backend)
        self._last_size = 1           # requests in the previous batch: > 1 means concurrent callers
        self.batches = 0              # counters for tests and benches
        self.requests = 0

    def score(self, records: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        rows = list(records)
        if not rows:
            return []
        sc = self.scorer
        features = sc.encode_many(rows)  # in the caller's thread: a bad record fails here, alone
        if len(rows) > self.max_rows:
            return sc.predictions(sc.probabilities(features, rows))
        req = _Request(features, rows)
        with self._cond:
            self._queue.append(req)
            self._cond.notify()  # a leader waiting for the batch to fill
            lead = not self._running
            if lead:
                self._running = True
            else:
                req.done = threading.Event()
        if not lead and req.done is not None and not req.done.wait(self.timeout):
            with self._cond:
                if not req.leader:  # handed leadership meanwhile: it must lead, or the queue behind it would stall
                    if req in self._queue:
                        self._queue.remove(req)
                    raise BatchTimeout(f"model {sc.name} v{sc.version}: no answer from the scorer within {self.timeout:g} s; retry")
        if lead or req.leader:
            self._lead()
        if req.error is not None:
            raise req.error
        assert req.proba is not None
        return sc.predictions(req.proba)

    def _lead(self) -> None:
        """Run one batch (this thread's request is in it), then hand leadership to the next queued request."""
        batch: list[_Request] = []
        try:
            with self._cond:
                if self._last_size > 1 and self.max_wait > 0:
                    deadline = time.monotonic() + self.max_wait
                    while sum(len(r.rows) for r in self._queue) < self.max_rows:
                        left = deadline - time.monotonic()
                        if left <= 0 or not self._cond.wait(left):
                            break
                n = 0
                while self._queue and (not batch or n + len(self._queue[0].rows) <= self.max_rows):
                    r = self._queue.pop(0)
                    batch.append(r)
                    n += len(r.rows)
                self._last_size = len(batch)
            self._run(batch)
        finally:
            for r in batch:
                if r.proba is None and r.error is None:
                    r.error = BatchTimeout(f"model {self.scorer.name} v{self.scorer.version}: the batch holding this request "
                                           "was interrupted; retry")
                if r.done is not None:
                    r.done.set()
            with self._cond:
                if self._queue:
                    nxt = self._queue[0]
                    nxt.leader = True  # it leaves the queue when it collects its own batch
                    if nxt.done is not None:  # always: only the leader, which is not queued, has none
                        nxt.done.set()
                else:
                    self._running = False

    def _run(self, batch: list[_Request]) -> None:
        sc = self.scorer
        self.batches += 1
        self.requests += len(batch)
        try:
            if len(batch) == 1:
                batch[0].proba = sc.probabilities(batch[0].features, batch[0].rows)
                return
            features = np.concatenate([r.features for r in batch])
            rows = [row for r in batch for row in r.rows]
            proba = sc.probabilities(features, rows)
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the backend's error
            for r in batch:
                r.error = exc
            return
        start = 0
        for r in batch:
            r.proba = proba[start:start + len(r.rows)]
            start += len(r.rows)
