"""One OS process of simulated devices for the chaos suite; SIGKILL-safe, restartable.

``python -m tests.chaos.devices CONFIG.json`` runs every device listed in the config as an
asyncio task. Each device speaks the real device protocol (docs/protocol.md), nothing mocked:

- enrolls over HTTP with its one-time token (once; the credential file is written atomically);
- connects to the broker with its credential (client id ``edgefleet-device-<id>``), subscribes
  to its retained assignment, checks it with ``runtimes.python.agent.verify_assignment`` (key,
  device id) and a persisted serial (replays ignored), downloads the archive over HTTP with its
  token, checks size and sha256, verifies the bundle signature with its trusted keys
  (``edgefleet.bundle_format``), persists its state atomically and publishes a retained status;
- produces prediction telemetry into the real durable outbox (``runtimes.python.outbox``) and
  flushes it in batches over MQTT QoS 1 with the agent's rules: a PUBACKed batch is only in
  flight; it leaves the outbox on the server's ack on ``edgefleet/v1/devices/<id>/ack`` (after
  the commit; a rejection is dropped and counted) and is resent when that ack does not come
  within ``ACK_TIMEOUT`` or the connection is replaced.

Every id accepted by the outbox is also appended to ``sent.log`` in the device's folder. The
append follows the outbox commit with no await in between, so a SIGKILL can only leave an id in
the outbox but not in the log; a restarted device adds such ids to the log before anything else
(``recover_ledger``), so ``sent.log`` is exactly the set of ids the device ever accepted.

The process stops producing when ``produce_stop`` exists, and exits when ``exit_file`` exists
or the config's ``deadline`` (unix time) passes. It reports nothing over pipes: the parent reads
the devices' folders (state.json, sent.log, outbox.sqlite).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import os
import random
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BATCH = 100                     # messages per telemetry batch (well under 256 KiB)
PUBLISH_TIMEOUT = 10.0          # seconds to wait for a PUBACK before reconnecting
ACK_TIMEOUT = 5.0               # seconds a PUBACKed batch waits for the server's ack before it is resent
MAX_INFLIGHT = 4                # batches awaiting the server's ack
STATUS_EVERY = 3.0              # seconds between retained status reports
CONNECT_BACKOFF = (0.2, 2.0)    # seconds: first and largest pause between connect attempts


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_ledger(path: Path) -> dict[str, float]:
    """{id: unix time accepted} from a sent.log ("<id> <time>" lines); a torn last line is ignored."""
    if not path.exists():
        return {}
    lines = path.read_text().split("\n")
    out = {}
    for ln in lines[:-1]:  # the last element is "" or a torn line
        if ln:
            mid, _, ts = ln.partition(" ")
            out[mid] = float(ts or 0)
    return out


class Device:
    def __init__(self, proc: "DeviceProcess", spec: dict[str, Any]) -> None:
        from runtimes.python.outbox import Outbox

        self.p = proc
        self.id: str = spec["device_id"]
        self.enroll_token: str = spec["enroll_token"]
        self.dir = Path(spec["dir"])
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cred_path = self.dir / "credential.json"
        self.state_path = self.dir / "state.json"
        self.ledger_path = self.dir / "sent.log"
        self.outbox = Outbox(self.dir / "outbox.sqlite")
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else \
            {"serial": 0, "active_version": None, "previous_version": None, "last_install": None}
        self.recover_ledger()
        self.ledger = open(self.ledger_path, "a")
        self.cred: dict[str, Any] | None = None
        self.trusted: list[Any] = []     # publisher keys: bundles only
        self.assigners: list[Any] = []   # the server's keys: assignments only
        self.rng = random.Random(f"{proc.cfg['seed']}:{self.id}:{time.time_ns()}")
        self.client: Any = None
        self.pending: dict[str, Any] | None = None   # newest verified assignment not yet installed
        self.install_wake = asyncio.Event()
        self.status_dirty = asyncio.Event()

    # -- ledger ------------------------------------------------------------------------------
    def recover_ledger(self) -> None:
        """Ids accepted by the outbox but missing from sent.log (a SIGKILL in between) are added."""
        have = set(read_ledger(self.ledger_path))
        text = self.ledger_path.read_text() if self.ledger_path.exists() else ""
        torn = text and not text.endswith("\n")
        missing = [m for m in self.outbox.peek(10**9) if m.id not in have]
        if torn or missing:
            with open(self.ledger_path, "a") as fh:
                fh.write(("\n" if torn else "") + "".join(f"{m.id} {m.created:.3f}\n" for m in missing))
                fh.flush()
                os.fsync(fh.fileno())

    def produce(self, n: int) -> None:
        bodies = []
        now = time.time()
        for _ in range(n):
            rec = self.rng.choice(self.p.records)
            score = self.rng.random()
            bodies.append({"device_id": self.id, "ts": iso(now), "model": "churn", "model_version": self.state["active_version"],
                           "score": score, "label": int(score >= 0.5), "sample_rate": 1.0, "features": rec})
        ids = self.outbox.put_many("prediction", bodies)
        self.ledger.write("".join(f"{i} {now:.3f}\n" for i in ids))
        self.ledger.flush()

    # -- HTTP (blocking urllib in a small thread pool) ---------------------------------------
    def _http(self, method: str, path: str, body: Any = None, token: str | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.p.cfg["server_url"] + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (OSError, ValueError, http.client.HTTPException) as e:  # refused, reset, cut mid-body: the server is down
            return -1, str(e).encode()

    async def http(self, *a: Any, **k: Any) -> tuple[int, bytes]:
        return await asyncio.get_running_loop().run_in_executor(self.p.pool, lambda: self._http(*a, **k))

    async def enroll(self) -> None:
        from cryptography.hazmat.primitives import serialization

        if not self.cred_path.exists():
            for attempt in range(10_000):
                self.p.check_deadline()
                code, body = await self.http("POST", "/api/v1/devices/enroll", {"token": self.enroll_token, "device_id": self.id})
                if code == 201:
                    write_atomic(self.cred_path, body)
                    break
                if 400 <= code < 500:
                    raise RuntimeError(f"{self.id}: enrollment refused: HTTP {code} {body[:200]!r}")
                await asyncio.sleep(min(2.0, 0.1 * 2 ** min(attempt, 5)))
        self.cred = json.loads(self.cred_path.read_text())
        self.trusted = [serialization.load_pem_public_key(p.encode()) for p in self.cred["publisher_keys"]]
        self.assigners = [serialization.load_pem_public_key(p.encode()) for p in self.cred["assignment_keys"]]

    # -- status ------------------------------------------------------------------------------
    def status_payload(self) -> bytes:
        st = self.state
        active = st["active_version"]
        return json.dumps({
            "device_id": self.id, "ts": iso(time.time()), "active_model": "churn" if active is not None else None,
            "active_version": active, "previous_version": st["previous_version"],
            "health": "ok" if active is not None else "no-model", "last_install": st["last_install"],
            "capabilities": {"backends": ["onnx"], "formats": ["onnx"]},
            "outbox": {"depth": self.outbox.depth(), "dropped_prediction": 0}, "agent_version": "chaos-sim", "transport": "mqtt",
        }).encode()

    # -- assignments -------------------------------------------------------------------------
    def on_assignment(self, payload: bytes) -> None:
        from edgefleet.errors import EdgefleetError
        from runtimes.python.agent import verify_assignment

        try:
            a = verify_assignment(json.loads(payload), self.assigners, self.id)
        except (ValueError, EdgefleetError) as exc:
            self.p.log(f"{self.id}: refused assignment: {exc}")
            return
        if a["serial"] <= self.state["serial"]:
            return  # a replay, or the retained copy of what is done
        if self.pending is None or a["serial"] > self.pending["serial"]:
            self.pending = a
            self.install_wake.set()

    async def installer(self) -> None:
        attempt = 0
        while True:
            await self.install_wake.wait()
            self.install_wake.clear()
            while self.pending is not None:
                a = self.pending
                if a["version"] == self.state["active_version"] and not a.get("rollback"):
                    self.state = {**self.state, "serial": a["serial"]}
                    write_atomic(self.state_path, json.dumps(self.state).encode())
                    self.pending = None if self.pending is a else self.pending
                    break
                async with self.p.download_sem:
                    code, body = await self.http("GET", a["url"], token=self.cred["token"], timeout=30)  # type: ignore[index]
                if code != 200 or len(body) != a["size"] or hashlib.sha256(body).hexdigest() != a["bundle_sha256"]:
                    attempt += 1
                    await asyncio.sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)) * (0.5 + self.rng.random()))
                    continue
                attempt = 0
                ok = await asyncio.get_running_loop().run_in_executor(self.p.pool, self._verify_bundle, body, a)
                prev = self.state["active_version"]
                if ok is None:
                    li = {"version": a["version"], "result": "installed", "ts": iso(time.time())}
                    self.state = {"serial": a["serial"], "active_version": a["version"],
                                  "previous_version": prev if prev != a["version"] else self.state["previous_version"], "last_install": li}
                else:
                    li = {"version": a["version"], "result": f"refused: {ok}", "ts": iso(time.time())}
                    self.state = {**self.state, "serial": a["serial"], "last_install": li}
                write_atomic(self.state_path, json.dumps(self.state).encode())
                self.p.log(f"{self.id}: serial {a['serial']} v{a['version']}: {li['result']}")
                if self.pending is a:
                    self.pending = None
                self.status_dirty.set()

    def _verify_bundle(self, archive: bytes, a: dict[str, Any]) -> str | None:
        """None when a trusted key verifies the bundle and it is the assigned model; else why not."""
        from edgefleet import bundle_format
        from edgefleet.errors import EdgefleetError

        path = self.dir / f".dl-{a['bundle_sha256'][:16]}.tar"
        path.write_bytes(archive)
        try:
            reasons = []
            for key in self.trusted:
                try:
                    manifest = bundle_format.verify(bundle_format.open_bundle(path), key)
                except (EdgefleetError, ValueError, OSError) as exc:
                    reasons.append(str(exc)[:120])
                    continue
                if manifest.get("version") != a["version"] or manifest.get("name") != a["model"]:
                    return f"bundle is {manifest.get('name')} v{manifest.get('version')}, assignment says {a['model']} v{a['version']}"
                return None
            return "no trusted key verifies the bundle: " + "; ".join(reasons[:2])
        finally:
            path.unlink(missing_ok=True)

    # -- MQTT session ------------------------------------------------------------------------
    async def session(self) -> None:
        import aiomqtt

        host, port = self.p.cfg["mqtt_host"], self.p.cfg["mqtt_port"]
        base = f"edgefleet/v1/devices/{self.id}"
        pause = CONNECT_BACKOFF[0]
        while True:
            try:
                async with self.p.connect_sem:
                    client = aiomqtt.Client(host, port, identifier=f"edgefleet-device-{self.id}", username=self.id,
                                            password=self.cred["token"], keepalive=10, clean_session=True, timeout=10)  # type: ignore[index]
                    await client.__aenter__()
                try:
                    pause = CONNECT_BACKOFF[0]
                    self.client = client
                    self.outbox.requeue_all()  # a new connection: what was in flight on the old one is resent
                    await client.subscribe([(f"{base}/assignment", 1), (f"{base}/ack", 1)], timeout=10)
                    await client.publish(f"{base}/status", self.status_payload(), qos=1, retain=True, timeout=PUBLISH_TIMEOUT)
                    tasks = [asyncio.create_task(self.receive(client)), asyncio.create_task(self.flusher(client, base)),
                             asyncio.create_task(self.reporter(client, base))]
                    try:
                        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                        for t in done:
                            t.result()
                    finally:
                        for t in tasks:
                            t.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
                finally:
                    self.client = None
                    with contextlib.suppress(Exception):
                        await client.__aexit__(None, None, None)
            except (aiomqtt.MqttError, OSError, asyncio.TimeoutError) as exc:
                self.p.count("mqtt_disconnects")
                if self.p.verbose:
                    self.p.log(f"{self.id}: mqtt: {type(exc).__name__}: {exc}")
            await asyncio.sleep(pause * (0.5 + self.rng.random()))
            pause = min(pause * 2, CONNECT_BACKOFF[1])

    async def receive(self, client: Any) -> None:
        async for msg in client.messages:
            if str(msg.topic).endswith("/ack"):
                self.on_ack(bytes(msg.payload))
            elif msg.payload:
                self.on_assignment(bytes(msg.payload))

    def on_ack(self, payload: bytes) -> None:
        try:
            ack = json.loads(payload)
        except ValueError:
            return
        if isinstance(ack, dict):
            if ack.get("result") == "rejected":
                self.p.count("batches_rejected")
                self.p.log(f"{self.id}: batch {ack.get('batch_id')} rejected: {ack.get('reason')}")
            self.outbox.server_ack(ack)

    async def reporter(self, client: Any, base: str) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.status_dirty.wait(), STATUS_EVERY)
            self.status_dirty.clear()
            await client.publish(f"{base}/status", self.status_payload(), qos=1, retain=True, timeout=PUBLISH_TIMEOUT)

    async def flusher(self, client: Any, base: str) -> None:
        ack_timeout = float(self.p.cfg.get("ack_timeout", ACK_TIMEOUT))
        while True:
            if self.outbox.expire(ack_timeout):
                self.p.count("ack_timeouts")
            msgs = self.outbox.pending(BATCH) if self.outbox.inflight() < MAX_INFLIGHT else []
            if not msgs:
                await asyncio.sleep(0.1)
                continue
            bid = self.outbox.send(msgs)  # in flight before the publish, so the ack cannot come first
            batch = {"batch_id": bid, "device_id": self.id, "sent_at": iso(time.time()), "messages": [m.to_wire() for m in msgs]}
            try:
                await client.publish(f"{base}/telemetry", json.dumps(batch).encode(), qos=1, timeout=PUBLISH_TIMEOUT)
            except BaseException:
                self.outbox.unsend(bid)
                raise
            # PUBACKed: in flight until the server's ack (on_ack) or ACK_TIMEOUT

    async def producer(self) -> None:
        every = self.p.cfg["produce_every"]
        await asyncio.sleep(self.rng.random() * every)
        while not self.p.produce_stop.exists():
            self.produce(self.p.cfg["produce_n"])
            await asyncio.sleep(every * (0.75 + 0.5 * self.rng.random()))

    async def run(self) -> None:
        await self.enroll()
        await asyncio.gather(self.session(), self.installer(), self.producer())


class DeviceProcess:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.produce_stop = Path(cfg["produce_stop"])
        self.exit_file = Path(cfg["exit_file"])
        self.verbose = bool(cfg.get("verbose"))
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.records: list[dict[str, Any]] = cfg["records"]
        self.counters: dict[str, int] = {}
        self.logfile = open(cfg["log"], "a")

    def log(self, line: str) -> None:
        self.logfile.write(f"{iso(time.time())} {line}\n")
        self.logfile.flush()

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def check_deadline(self) -> None:
        if time.time() > self.cfg["deadline"]:
            raise SystemExit(f"device process {os.getpid()}: deadline passed")

    async def main(self) -> None:
        self.connect_sem = asyncio.Semaphore(16)
        self.download_sem = asyncio.Semaphore(4)
        devices = [Device(self, spec) for spec in self.cfg["devices"]]
        self.log(f"process {os.getpid()} starting {len(devices)} devices")
        tasks = [asyncio.create_task(d.run()) for d in devices]
        try:
            while not self.exit_file.exists():
                self.check_deadline()
                for t in tasks:
                    if t.done() and not t.cancelled() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                await asyncio.sleep(0.2)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for d in devices:
                d.outbox.close()
                d.ledger.close()
            self.log(f"process {os.getpid()} exiting; counters {self.counters}")


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(DeviceProcess(cfg).main())


if __name__ == "__main__":
    main()
