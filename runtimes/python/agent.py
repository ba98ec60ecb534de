"""The sync agent: keep a verified model active, score offline, ship telemetry when possible.

    edgefleet device run --server URL --device-id ID --credential FILE --data-dir DIR [--mqtt URL]

One loop does the work, so ordering is easy to reason about; paho's network thread only hands
assignment payloads to a queue. Each tick: take the newest assignment (MQTT retained message,
or an HTTP poll with ETag when MQTT is unreachable), verify its signature, serial and device
id, download the bundle (resuming), install it through the model store (which verifies again,
refuses downgrades unless ordered, health-checks, reverts), report status, then flush up to a
batch of outbox messages (MQTT QoS1 or HTTP POST), backing off with jitter on failure.
Scoring (``score``) never touches the network. SIGTERM sets a stop flag: the loop closes the
sketch window, sends a last status if it can, and exits 0.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import edgefleet
from edgefleet import keys
from edgefleet.bundle_format import canonical_json
from edgefleet.errors import EdgefleetError, VerificationError
from runtimes.python.backends import available_backends
from runtimes.python.errors import DeviceError, DownloadError, InstallError
from runtimes.python.outbox import Outbox
from runtimes.python.scorer import Prediction, Scorer
from runtimes.python.store import ModelStore, atomic_write
from runtimes.python.telemetry import Telemetry, _iso
from runtimes.python.transport import Http, MqttLink, TransportError, backoff_delay


@dataclass
class AgentConfig:
    """Everything the agent needs; times in seconds, sizes in bytes."""

    server: str
    device_id: str
    token: str | None
    data_dir: Path
    trusted_keys: list[Any]
    mqtt: str | None = None
    poll_seconds: float = 30.0          # HTTP assignment poll period while MQTT is unreachable
    status_seconds: float = 60.0        # periodic status report
    batch_size: int = 500               # outbox messages per telemetry batch
    max_bundle_bytes: int = 256 * 1024 * 1024
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    mqtt_reconnect_max: float = 30.0
    sample_rate: float = 1.0            # fraction of predictions sent with their score
    include_features: bool = True       # privacy switch: False sends no raw features
    window_seconds: float = 3600.0      # sketch window
    outbox_max_messages: int = 200_000
    tick_seconds: float = 0.2
    input_dir: Path | None = None       # MiNiFi-style drop folder of *.jsonl records to score

    @classmethod
    def from_credential(cls, path: str | os.PathLike[str], *, data_dir: str | os.PathLike[str], server: str | None = None,
                        device_id: str | None = None, mqtt: str | None = None, **kw: Any) -> "AgentConfig":
        try:
            cred = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DeviceError(f"credential file {path}: cannot read it as JSON: {exc}") from exc
        pems = cred.get("trusted_keys") or []
        if not pems:
            raise DeviceError(f"credential file {path}: 'trusted_keys' is empty; the device would trust nothing")
        from cryptography.hazmat.primitives import serialization

        trusted = []
        for i, pem in enumerate(pems):
            try:
                trusted.append(serialization.load_pem_public_key(pem.encode()))
            except ValueError as exc:
                raise DeviceError(f"credential file {path}: trusted_keys[{i}] is not a PEM public key") from exc
        dev = device_id or cred.get("device_id")
        if not dev:
            raise DeviceError(f"credential file {path}: no device_id, and none given with --device-id")
        if cred.get("device_id") and device_id and cred["device_id"] != device_id:
            raise DeviceError(f"--device-id {device_id} does not match the credential's device_id {cred['device_id']}")
        srv = server or cred.get("server")
        if not srv:
            raise DeviceError("no server URL: pass --server or put 'server' in the credential file")
        return cls(server=srv, device_id=dev, token=cred.get("token"), data_dir=Path(data_dir), trusted_keys=trusted,
                   mqtt=mqtt or cred.get("mqtt"), **kw)


def verify_assignment(envelope: Mapping[str, Any], trusted: list[Any], device_id: str) -> dict[str, Any]:
    """Check an assignment's signature, key and device id; return the assignment."""
    try:
        body = envelope["assignment"]
        sig = base64.b64decode(envelope["signature"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"assignment is malformed: {exc}") from exc
    data = canonical_json(body)
    by_id = {keys.key_id(k): k for k in trusted}
    key = by_id.get(str(envelope.get("key_id")))
    if key is None:
        raise VerificationError(f"assignment is signed by unknown key {envelope.get('key_id')!r}")
    keys.verify_signature(key, sig, data)
    if body.get("device_id") != device_id:
        raise VerificationError(f"assignment is for device {body.get('device_id')!r}, not {device_id!r}")
    for name, kind in (("serial", int), ("version", int), ("bundle_sha256", str), ("size", int), ("url", str)):
        if not isinstance(body.get(name), kind):
            raise VerificationError(f"assignment field {name!r} is missing or not a {kind.__name__}")
    return dict(body)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.cfg = config
        root = Path(config.data_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.store = ModelStore(root / "models", config.trusted_keys, max_bundle_bytes=config.max_bundle_bytes)
        self.outbox = Outbox(root / "outbox.sqlite", max_messages=config.outbox_max_messages)
        self.telemetry = Telemetry(self.outbox, config.device_id, sample_rate=config.sample_rate,
                                   include_features=config.include_features, window_seconds=config.window_seconds)
        self.http = Http(config.server, config.token)
        self.downloads = root / "downloads"
        self.downloads.mkdir(exist_ok=True)
        self.state_path = root / "agent.json"
        self.scorer: Scorer | None = self.store.load_active()
        self._lock = threading.Lock()
        self._assignments: "queue.Queue[bytes]" = queue.Queue()
        self._stop = threading.Event()
        self.last_install: dict[str, Any] | None = None
        self.mqtt: MqttLink | None = None
        self._etag: str | None = None
        self._next_poll = 0.0
        self._next_status = 0.0
        self._next_flush = 0.0
        self._flush_attempt = 0
        self._status_dirty = True
        self._download_attempt = 0
        self._next_download = 0.0

    # -- public, offline ---------------------------------------------------------------------
    def score(self, record: Mapping[str, Any], entity_id: str | None = None) -> Prediction:
        scorer = self.scorer
        if scorer is None:
            raise DeviceError("no model is installed yet; the device is waiting for its first assignment")
        pred, features = scorer.score_detailed(record)
        self.telemetry.on_prediction(scorer.manifest, record, features, pred, entity_id)
        return pred

    def score_inbox(self) -> int:
        """MiNiFi-style: score every ``*.jsonl`` dropped in ``input_dir``; results go to ``scored/``.

        A record may carry ``"_entity_id"`` (kept out of the features, used to join outcomes).
        A bad record gets an ``error`` line naming the field; the rest of the file still scores.
        """
        inbox = self.cfg.input_dir
        if inbox is None or self.scorer is None:
            return 0
        done, scored = inbox / "done", inbox / "scored"
        done.mkdir(parents=True, exist_ok=True)
        scored.mkdir(parents=True, exist_ok=True)
        n = 0
        for path in sorted(inbox.glob("*.jsonl")):
            lines = []
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    entity = rec.pop("_entity_id", None) if isinstance(rec, dict) else None
                    p = self.score(rec, entity)
                    lines.append({"line": i + 1, "entity_id": entity, "probability": p.probability, "label": p.label, "model_version": p.version})
                    n += 1
                except (ValueError, EdgefleetError) as exc:
                    lines.append({"line": i + 1, "error": str(exc)})
            atomic_write(scored / path.name, "".join(json.dumps(x) + "\n" for x in lines).encode())
            os.replace(path, done / path.name)
        return n

    def record_outcome(self, entity_id: str, label: Any, observed_at: str | None = None) -> str:
        return self.telemetry.record_outcome(entity_id, label, observed_at)

    # -- state -----------------------------------------------------------------------------
    def _agent_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save_agent_state(self, **changes: Any) -> None:
        state = {**self._agent_state(), **changes}
        atomic_write(self.state_path, json.dumps(state, sort_keys=True).encode())

    def status(self) -> dict[str, Any]:
        s = self.scorer
        st = self.store.state()
        return {
            "device_id": self.cfg.device_id, "ts": _iso(time.time()),
            "active_model": s.name if s else None, "active_version": s.version if s else None,
            "previous_version": st.get("previous_version"),
            "health": "ok" if s else "no-model",
            "last_install": self.last_install,
            "capabilities": {"backends": available_backends(), "formats": available_backends()},
            "outbox": self.outbox.stats(), "agent_version": edgefleet.__version__,
            "transport": "mqtt" if self.mqtt and self.mqtt.connected.is_set() else "http",
        }

    # -- assignments -----------------------------------------------------------------------
    def _on_mqtt_assignment(self, payload: bytes) -> None:
        self._assignments.put(payload)

    def _poll_http(self) -> None:
        headers = {"If-None-Match": self._etag} if self._etag else {}
        try:
            code, hdrs, body = self.http.json("GET", f"/api/v1/devices/{self.cfg.device_id}/assignment", headers=headers)
        except TransportError as exc:
            if exc.status == 404:
                return
            raise
        if code == 200 and body is not None:
            self._etag = hdrs.get("ETag") or hdrs.get("Etag")
            self._assignments.put(json.dumps(body).encode())

    def _handle_assignment(self, payload: bytes) -> None:
        try:
            envelope = json.loads(payload)
            a = verify_assignment(envelope, self.cfg.trusted_keys, self.cfg.device_id)
        except (ValueError, EdgefleetError) as exc:
            self.last_install = {"result": f"refused assignment: {exc}", "ts": _iso(time.time())}
            self._status_dirty = True
            return
        state = self._agent_state()
        pending = state.get("pending")
        if a["serial"] <= int(state.get("serial", -1)) or (pending and a["serial"] <= int(pending["serial"])):
            return  # a replay, the retained copy of what is done, or older than what is under way
        active = self.scorer.version if self.scorer else None
        if active == a["version"] and not a.get("rollback"):
            self._save_agent_state(serial=a["serial"], pending=None)
            return
        self._save_agent_state(pending=a)
        self._install(a)

    def _install(self, a: dict[str, Any]) -> None:
        if time.monotonic() < self._next_download:
            return
        dest = self.downloads / f"{a['bundle_sha256']}.tar"
        try:
            self.http.download(a["url"], dest, size=a["size"], sha256=a["bundle_sha256"], max_bytes=self.cfg.max_bundle_bytes)
        except DownloadError as exc:
            self._download_attempt += 1
            self._next_download = time.monotonic() + backoff_delay(self._download_attempt, self.cfg.backoff_base, self.cfg.backoff_cap)
            self.last_install = {"version": a["version"], "result": f"download pending: {exc}", "ts": _iso(time.time())}
            self._status_dirty = True
            return
        self._download_attempt = 0
        try:
            res = self.store.install(dest, allow_downgrade=bool(a.get("rollback")))
            self.scorer = res.scorer or self.store.load_active()
            self.last_install = {"version": a["version"], "result": "installed", "seconds": round(res.seconds, 3), "ts": _iso(time.time())}
        except InstallError as exc:
            self.last_install = {"version": a["version"], "result": f"refused: {exc}", "ts": _iso(time.time())}
        finally:
            dest.unlink(missing_ok=True)
        self._save_agent_state(serial=a["serial"], pending=None)
        self._status_dirty = True

    # -- telemetry ---------------------------------------------------------------------------
    def flush_once(self) -> int:
        """Send one batch; returns how many messages were acknowledged (0 on failure)."""
        msgs = self.outbox.peek(self.cfg.batch_size)
        if not msgs:
            return 0
        batch = {"device_id": self.cfg.device_id, "sent_at": _iso(time.time()), "messages": [m.to_wire() for m in msgs]}
        ok = False
        if self.mqtt is not None and self.mqtt.connected.is_set():
            ok = self.mqtt.publish("telemetry", batch)
        if not ok and (self.mqtt is None or not self.mqtt.connected.is_set()):
            try:
                self.http.json("POST", f"/api/v1/devices/{self.cfg.device_id}/telemetry", batch)
                ok = True
            except TransportError:
                ok = False
        if ok:
            return self.outbox.ack(m.id for m in msgs)
        return 0

    def _send_status(self) -> None:
        status = self.status()
        if self.mqtt is not None and self.mqtt.publish("status", status, retain=True):
            return
        self.http.json("POST", f"/api/v1/devices/{self.cfg.device_id}/status", status)

    # -- loop ------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> None:
        now = time.monotonic()
        while True:
            try:
                payload = self._assignments.get_nowait()
            except queue.Empty:
                break
            self._handle_assignment(payload)
        pending = self._agent_state().get("pending")
        if pending:
            self._install(pending)
        mqtt_up = self.mqtt is not None and self.mqtt.connected.is_set()
        if not mqtt_up and now >= self._next_poll:
            self._next_poll = now + self.cfg.poll_seconds
            try:
                self._poll_http()
            except TransportError:
                pass
        if now >= self._next_flush and self.outbox.depth():
            if self.flush_once():
                self._flush_attempt = 0
                self._next_flush = now  # keep draining
            else:
                self._flush_attempt += 1
                self._next_flush = now + backoff_delay(self._flush_attempt, self.cfg.backoff_base, self.cfg.backoff_cap)
        self.score_inbox()
        if self._status_dirty or now >= self._next_status:
            try:
                self._send_status()
                self._status_dirty = False
                self._next_status = now + self.cfg.status_seconds
            except TransportError:
                self._next_status = now + backoff_delay(1, self.cfg.backoff_base, self.cfg.backoff_cap)

    def run(self, *, install_signal_handlers: bool = True) -> int:
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        if self.cfg.mqtt:
            self.mqtt = MqttLink(self.cfg.mqtt, self.cfg.device_id, self.cfg.token, on_assignment=self._on_mqtt_assignment,
                                 reconnect_max=self.cfg.mqtt_reconnect_max)
            self.mqtt.start()
        try:
            while not self._stop.is_set():
                try:
                    self.tick()
                except (DeviceError, OSError) as exc:  # never die on a network or disk hiccup
                    self.last_install = self.last_install or {"result": f"agent error: {exc}"}
                self._stop.wait(self.cfg.tick_seconds)
        finally:
            self.telemetry.flush_window()
            try:
                self._send_status()
            except (TransportError, OSError):
                pass
            if self.mqtt is not None:
                self.mqtt.stop()
            self.outbox.close()
        return 0
