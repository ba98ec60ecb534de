"""Telemetry batches parsed in a child process while the ingest worker stores (issue 13).

Profiled on bench/ingest.py (SQLite, 2 cores): the worker thread spent about 65 % of its time in
``ingest.parse_batch`` (``json.loads``, the plain-shape check, the rows, the body's compact JSON)
and the rest inside the database. A thread cannot run that parsing beside the store: both need
the GIL, and sqlite3's ``executemany`` takes it back at every row. A child process can. The
bridge's parse-ahead thread hands each queued telemetry batch to :class:`ParsePool` and waits
(the GIL released) for the rows; the worker uses them exactly as it used its own parse.

What runs in the child is ``ingest.parse_rows``, the function the worker runs itself, so a batch
is accepted, or refused with the same error naming the field, on either side. The rows come back
without the parsed ``body`` (its compact JSON, ``body_json``, is what is stored). Any failure of
the pool itself (the child died, a result that cannot be pickled, a timeout) is not the batch's
fault: the pool is given up and the worker parses in-process, as before. Nothing is acknowledged
by the child; acks still follow the worker's commit.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from fleet_server.errors import FleetError


def parse_in_child(max_bytes: int, device_id: str, payload: bytes) -> tuple[bool, Any]:
    """(True, rows) or (False, the exception ``parse_rows`` raised), run in the child process."""
    from fleet_server import ingest

    try:
        rows = ingest.parse_rows(max_bytes, device_id, payload)
    except Exception as exc:  # noqa: BLE001 - handed back: the worker rejects the batch with it
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its name and text
            return False, FleetError(f"body: {type(exc).__name__}: {str(exc)[:200]}")
        return False, exc
    for r in rows:
        del r["body"]  # stored as body_json; not sent back twice
    return True, rows


def watch_server(server_pid: int) -> None:
    """In the child: exit when the server process is gone. A child of a SIGKILLed server would
    otherwise wait forever (its task queue's pipe never reaches EOF: the child holds a write end
    of it too), and keep its forkserver alive with it."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except OSError:  # alive (EPERM cannot happen for our own parent's pid, but is not death)
                pass

    threading.Thread(target=watch, name="edgefleet-parser-watch", daemon=True).start()


def default_processes() -> int:
    """One parser process when there is a second core for it, else none (parse in-process)."""
    return 1 if (os.cpu_count() or 1) >= 2 else 0


class ParsePool:
    """Up to ``processes`` parser processes, started on first use (forkserver: not a fork of the
    threaded server). :meth:`submit` answers None once the pool is given up."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.broken = processes <= 0
        self.failure: str | None = None
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, max_bytes: int, device_id: str, payload: bytes) -> Future[tuple[bool, Any]] | None:
        if self.broken:
            return None
        try:
            with self._lock:  # the warm-up thread and the first batch may come at once
                if self._pool is None:
                    ctx = multiprocessing.get_context("forkserver")
                    ctx.set_forkserver_preload(["fleet_server.ingest"])  # not the server's __main__
                    self._pool = ProcessPoolExecutor(self.processes, mp_context=ctx, initializer=watch_server,
                                                     initargs=(os.getpid(),))
            return self._pool.submit(parse_in_child, max_bytes, device_id, payload)
        except Exception as exc:  # noqa: BLE001 - no child process: parse in-process
            self.give_up(exc)
            return None

    def warm_up(self) -> None:
        """Start the child process now, off the caller's thread (the first batch need not wait for it)."""
        if not self.broken:
            threading.Thread(target=lambda: self.submit(0, "", b""), name="mqtt-ingest-parser-start", daemon=True).start()

    def give_up(self, exc: BaseException) -> None:
        """Stop using the child process (it died, hung or could not start)."""
        self.broken = True
        self.failure = f"{type(exc).__name__}: {str(exc)[:200]}"
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=False, cancel_futures=True)
