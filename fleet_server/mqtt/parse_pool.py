"""Telemetry batches parsed in a child process while the ingest worker stores (issue 13).

Profiled on bench/ingest.py (SQLite, 2 cores): the worker thread spent about 65 % of its time in
``ingest.parse_batch`` (``json.loads``, the plain-shape check, the rows, the body's compact JSON)
and the rest inside the database. A thread cannot run that parsing beside the store: both need
the GIL, and sqlite3's ``executemany`` takes it back at every row. A child process can. The
bridge hands each queued telemetry batch to :class:`ParsePool` and the worker waits (the GIL
released) for the rows, which it stores as they come.

What runs in the child is ``ingest.parse_tuples``, the function the worker runs itself, so a batch
is accepted, or refused with the same error naming the field, on either side. Its rows are the
driver's final tuples: the worker binds them as they are, with no per-row Python of its own.

The child is one long-lived process on two plain pipes (tasks in, pickled answers out, in
order), not a ``ProcessPoolExecutor``: measured with 100-message batches, the executor cost the
server process 440 us of CPU per batch (work items, its manager and feeder threads, wake-up
pipes), the plain pipes 130-150 us, most of it loading the answer. In the server, a sender
thread writes the tasks (a network thread never blocks on a full pipe) and a receiver thread
reads the answers and completes each batch's future.

Any failure of the child itself (it died, a result that cannot be read, a timeout) is not the
batch's fault: the pool is given up, the child is killed, every batch still waiting fails over
to the worker, which parses in-process as before. Nothing is acknowledged by the child; acks
still follow the worker's commit.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import pickle
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

from fleet_server.errors import FleetError


def parse_in_child(max_bytes: int, device_id: str, payload: bytes) -> tuple[bool, Any]:
    """(True, rows) or (False, the exception ``parse_tuples`` raised), run in the child process."""
    from fleet_server import ingest

    try:
        rows = ingest.parse_tuples(max_bytes, device_id, payload)
    except Exception as exc:  # noqa: BLE001 - handed back: the worker rejects the batch with it
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its name and text
            return False, FleetError(f"body: {type(exc).__name__}: {str(exc)[:200]}")
        return False, exc
    return True, rows


def watch_server(server_pid: int) -> None:
    """In the child: exit when the server process is gone. The task pipe's EOF says so too, but
    only once no process holds its write end; this also covers one that outlived the server."""

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


def child_main(tasks: Any, answers: Any, server_pid: int) -> None:
    """The parser process: each task is ``b"<max_bytes> <n>\\n"``, then the device id's n bytes, then
    the payload (length-prefixed: a device id is never split on a byte it holds); each answer, in
    the same order, the pickled ``parse_in_child`` result."""
    watch_server(server_pid)
    while True:
        try:
            task = tasks.recv_bytes()
        except (EOFError, OSError):  # the server closed the pipe (or is gone): nothing left to do
            return
        head, _, rest = task.partition(b"\n")
        limit, n = (int(v) for v in head.split())
        answer = parse_in_child(limit, rest[:n].decode("utf-8", "surrogateescape"), rest[n:])
        try:
            blob = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - rows that cannot pickle: the worker parses this batch itself
            blob = pickle.dumps((False, ChildProcessError(f"answer not picklable: {type(exc).__name__}")))
        try:
            answers.send_bytes(blob)
        except OSError:
            return


def default_processes() -> int:
    """One parser process when there is a second core for it, else none (parse in-process)."""
    return 1 if (os.cpu_count() or 1) >= 2 else 0


class ParsePool:
    """One parser process when ``processes`` >= 1 (a second one found no second free core to run
    on: the server, Mosquitto and the publishers share the other), started on first use
    (forkserver: not a fork of the threaded server). :meth:`submit` answers None once the pool is
    given up."""

    def __init__(self, processes: int) -> None:
        self.processes = min(processes, 1)
        self.broken = processes <= 0
        self.failure: str | None = None
        self._lock = threading.Lock()
        self._proc: Any = None
        self._outbox: "queue.SimpleQueue[bytes | None]" = queue.SimpleQueue()
        self._waiting: collections.deque[Future[tuple[bool, Any]]] = collections.deque()  # in task order

    def pids(self) -> list[int]:
        """The parser process's pid, once started (tests kill or stop it)."""
        return [self._proc.pid] if self._proc is not None and self._proc.pid is not None else []

    def _start(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["fleet_server.ingest"])  # not the server's __main__
        task_r, task_w = ctx.Pipe(duplex=False)
        answer_r, answer_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=child_main, args=(task_r, answer_w, os.getpid()), name="edgefleet-parser", daemon=True)
        proc.start()
        task_r.close()  # the child's ends: with ours closed, the child's exit is our EOF, and ours its
        answer_w.close()
        self._proc = proc
        threading.Thread(target=self._send_loop, args=(task_w,), name="mqtt-ingest-parser-send", daemon=True).start()
        threading.Thread(target=self._receive_loop, args=(answer_r,), name="mqtt-ingest-parser-receive", daemon=True).start()

    def submit(self, max_bytes: int, device_id: str, payload: bytes) -> Future[tuple[bool, Any]] | None:
        if self.broken:
            return None
        try:
            with self._lock:  # the warm-up thread and the first batch may come at once; and the task order is the answer order
                if self.broken:
                    return None
                if self._proc is None:
                    self._start()
                fut: Future[tuple[bool, Any]] = Future()
                self._waiting.append(fut)
                dev = device_id.encode("utf-8", "surrogateescape")
                self._outbox.put(b"%d %d\n%s" % (max_bytes, len(dev), dev) + payload)
            return fut
        except Exception as exc:  # noqa: BLE001 - no child process: parse in-process
            self.give_up(exc)
            return None

    # Each thread closes its own pipe end when it leaves (never another thread: a descriptor closed
    # under a blocked read could be reused by the next open and read from by mistake).
    def _send_loop(self, conn: Any) -> None:
        try:
            while True:
                task = self._outbox.get()
                if task is None:
                    return
                conn.send_bytes(task)
        except Exception as exc:  # noqa: BLE001 - the child is gone (or killed by give_up)
            self.give_up(exc)
        finally:
            conn.close()

    def _receive_loop(self, conn: Any) -> None:
        try:
            self._receive(conn)
        finally:
            conn.close()

    def _receive(self, conn: Any) -> None:
        while True:
            try:
                answer = pickle.loads(conn.recv_bytes())
            except EOFError:
                self.give_up(ChildProcessError("the parser process exited"))
                return
            except Exception as exc:  # noqa: BLE001 - the pipe broke, or an answer did not load
                self.give_up(exc)
                return
            with self._lock:
                fut = self._waiting.popleft() if self._waiting else None
            if fut is not None and not fut.done():
                fut.set_result(answer)

    def warm_up(self) -> None:
        """Start the child process now, off the caller's thread (the first batch need not wait for it)."""
        if not self.broken:
            threading.Thread(target=lambda: self.submit(0, "", b""), name="mqtt-ingest-parser-start", daemon=True).start()

    def give_up(self, exc: BaseException) -> None:
        """Stop using the child process (it died, hung or could not start); kill it."""
        with self._lock:
            if not self.broken:
                self.failure = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.broken = True
        self.close(exc)

    def close(self, exc: BaseException | None = None) -> None:
        """Stop the child; every batch still waiting for it fails (its worker parses it itself)."""
        with self._lock:
            self.broken = True
            proc, self._proc = self._proc, None
            waiting, self._waiting = self._waiting, collections.deque()
        self._outbox.put(None)
        for fut in waiting:
            if not fut.done():
                fut.set_exception(exc if exc is not None else ChildProcessError("the parser process was stopped"))
        if proc is not None:
            try:
                proc.kill()  # a hung child (or one blocked writing) never reads EOF; a killed one lets our threads out
                proc.join(2)
            except Exception:  # noqa: BLE001 - already gone
                pass
