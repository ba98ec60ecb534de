"""The sync agent: keep a verified model active, score offline, ship telemetry when possible.

    edgefleet agent run --server URL --device-id ID --credential FILE --data-dir DIR [--mqtt URL]

One loop does the work, so ordering is easy to reason about; paho's network thread only hands
assignment payloads to a queue. Each tick: take the newest assignment (MQTT retained message,
or an HTTP poll with ETag when MQTT is unreachable), verify its signature, serial and device
id, download the bundle (resuming), install it through the model store (which verifies again,
refuses downgrades unless ordered, health-checks, reverts), report status, then flush up to a
batch of outbox messages (MQTT QoS1 or HTTP POST), backing off with jitter on failure.

A batch is cut by count and by bytes (``edgefleet.protocol``: 500 messages, 256 KiB), so the
broker never acknowledges a batch the server will refuse as oversized. A message that cannot
fit any batch is dropped and counted (``dropped_oversized``) instead of blocking the outbox.
When the server refuses a batch over HTTP with a payload 4xx (400, 413, 422), the batch is
halved until the refused message is alone; only that one is dropped and counted
(``dropped_rejected``); everything else is delivered. Network errors, 5xx, 401/403/404, 408
and 429 are retried with backoff, never dropped.

Over MQTT a PUBACK is only the broker's receipt (Mosquitto acknowledges on receipt and forgets
when it is killed), so a PUBACKed batch goes *in flight* and leaves the outbox only on the
server's ack on ``edgefleet/v1/devices/<id>/ack`` (after its commit; a rejected batch is resent
in halves and a message rejected alone is dropped, counted as ``dropped_rejected``). A batch with no server ack within ``ack_timeout``, or
still in flight when the connection is replaced, is sent again; the server dedups by id.

Two key roles are kept apart: ``assignment_keys`` (the fleet server's) sign assignments only,
``publisher_keys`` (``AgentConfig.trusted_keys``) sign bundles only. A key may hold one role,
never both; a legacy credential with one merged ``trusted_keys`` list and no ``assignment_keys``
is refused (re-enroll).

When the model store rebuilt its state or fell back to an older slot (see store.py), the agent
says so in its status (``fallback``, ``store``) and re-installs the last assignment it had
installed, so a device that lost its model converges again without waiting for the server.
Scoring (``score``) never touches the network. SIGTERM sets a stop flag and cuts a network wait
of the loop short (a poll, flush or status exchange; a hanging server cannot hold the exit for
its 10 s timeout): the loop closes the sketch window into the outbox, makes a final flush (what
is not acknowledged stays in the outbox, nothing is dropped to finish sooner) and sends a last
status, both within ``final_flush_seconds`` counted from the signal, and exits 0.

Everything the agent decides is logged through this module's logger (``runtimes.python.agent``;
the store, transport, flush and inbox log under their own module names): the start-up summary,
each assignment with its model, version and rollout, download start, resume and end, verify,
canary, install, rollback with its cause, inbox files, flush failures with the next retry, and
the final flush. Failures are WARNING or ERROR with their reason, the rest INFO.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import edgefleet
from edgefleet import keys
from edgefleet.bundle_format import canonical_json
from edgefleet.errors import EdgefleetError, KeyFileError, VerificationError
from edgefleet.fsutil import atomic_write
from edgefleet.protocol import MAX_BATCH_BYTES, MAX_BATCH_MESSAGES
from runtimes.python.backends import available_backends
from runtimes.python.errors import DeviceError, DownloadError, InstallError
from runtimes.python.flushing import PAYLOAD_REFUSED, TelemetryFlush  # noqa: F401 - PAYLOAD_REFUSED kept importable here
from runtimes.python.inbox import score_folder
from runtimes.python.outbox import Outbox
from runtimes.python.scorer import Prediction, Scorer
from runtimes.python.store import ModelStore
from runtimes.python.telemetry import Telemetry, _iso
from runtimes.python.transport import Http, MqttLink, TransportError, backoff_delay

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    """Everything the agent needs; times in seconds, sizes in bytes."""

    server: str
    device_id: str
    token: str | None
    data_dir: Path
    trusted_keys: list[Any]             # publisher keys: the only keys a bundle may be signed with
    mqtt: str | None = None
    assignment_keys: list[Any] | None = None  # the server's keys for assignments; None = trusted_keys (legacy)
    poll_seconds: float = 30.0          # HTTP assignment poll period while MQTT is unreachable
    status_seconds: float = 60.0        # periodic status report
    batch_size: int = MAX_BATCH_MESSAGES  # outbox messages per telemetry batch
    batch_bytes: int = MAX_BATCH_BYTES  # bytes per telemetry batch as sent
    max_bundle_bytes: int = 256 * 1024 * 1024
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    mqtt_reconnect_max: float = 30.0
    sample_rate: float = 1.0            # fraction of predictions sent with their score
    include_features: bool = True       # privacy switch: False sends no raw features
    window_seconds: float = 3600.0      # sketch window
    outbox_max_messages: int = 200_000
    tick_seconds: float = 0.2
    ack_timeout: float = 10.0           # MQTT: seconds a PUBACKed batch waits for the server's ack before it is resent
    max_inflight_batches: int = 4       # MQTT: batches published and awaiting the server's ack
    input_dir: Path | None = None       # MiNiFi-style drop folder of *.jsonl records to score
    final_flush_seconds: float = 5.0    # on SIGTERM: seconds to send the outbox (and a last status) before exit; 0 = none

    @classmethod
    def from_credential(cls, path: str | os.PathLike[str], *, data_dir: str | os.PathLike[str], server: str | None = None,
                        device_id: str | None = None, mqtt: str | None = None, **kw: Any) -> "AgentConfig":
        try:
            cred = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DeviceError(f"credential file {path}: cannot read it as JSON: {exc}") from exc
        if not isinstance(cred, dict):
            raise DeviceError(f"credential file {path}: expected a JSON object")
        legacy = _load_pems(cred, "trusted_keys", path)
        if "assignment_keys" not in cred:
            # Without the server's keys apart, a legacy list would make one key both sign
            # assignments and bundles (the server key could then sign a bundle): refuse.
            raise DeviceError(f"credential file {path}: no 'assignment_keys' (a legacy credential with one key list); "
                              "re-enroll the device to get separate 'assignment_keys' and 'publisher_keys'")
        assignment = _load_pems(cred, "assignment_keys", path)
        publisher = _load_pems(cred, "publisher_keys", path) if "publisher_keys" in cred else None
        if publisher is None:
            # a credential listing every key in trusted_keys plus the assignment keys apart
            assigners = {keys.key_id(k) for k in assignment}
            publisher = [k for k in legacy if keys.key_id(k) not in assigners]
        trusted = publisher
        if not trusted:
            raise DeviceError(f"credential file {path}: no publisher key ('publisher_keys' or 'trusted_keys'); the device would trust nothing")
        if not assignment:
            raise DeviceError(f"credential file {path}: 'assignment_keys' is empty; the device would accept no assignment")
        if {keys.key_id(k) for k in assignment} & {keys.key_id(k) for k in trusted}:
            raise DeviceError(f"credential file {path}: a key is listed both as an assignment key and as a publisher key; a key has one role")
        dev = device_id or cred.get("device_id")
        if not dev:
            raise DeviceError(f"credential file {path}: no device_id, and none given with --device-id")
        if cred.get("device_id") and device_id and cred["device_id"] != device_id:
            raise DeviceError(f"--device-id {device_id} does not match the credential's device_id {cred['device_id']}")
        srv = server or cred.get("server")
        if not srv:
            raise DeviceError("no server URL: pass --server or put 'server' in the credential file")
        return cls(server=srv, device_id=dev, token=cred.get("token"), data_dir=Path(data_dir), trusted_keys=trusted,
                   mqtt=mqtt or cred.get("mqtt"), assignment_keys=assignment, **kw)


class _Interrupted(BaseException):
    """A signal cut a network wait of the loop short (BaseException: no error handler takes it)."""


def _load_pems(cred: Mapping[str, Any], name: str, path: Any) -> list[Any]:
    pems = cred.get(name) or []
    if not isinstance(pems, list):
        raise DeviceError(f"credential file {path}: {name!r} must be a list of PEM public keys")
    out = []
    for i, pem in enumerate(pems):
        try:
            out.append(keys.public_key_from_pem(str(pem), f"credential file {path}: {name}[{i}]"))
        except KeyFileError as exc:
            raise DeviceError(str(exc)) from exc
    return out


_ASSIGNMENT_FIELDS = (("serial", int), ("version", int), ("bundle_sha256", str), ("size", int), ("url", str))


def _assignment_ok(a: Any) -> bool:
    """The shape of a (previously verified) assignment kept in agent.json; False if edited or torn."""
    return isinstance(a, dict) and all(isinstance(a.get(n), k) and not isinstance(a.get(n), bool) for n, k in _ASSIGNMENT_FIELDS)


def _int(v: Any, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


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
    for name, kind in _ASSIGNMENT_FIELDS:
        if not isinstance(body.get(name), kind) or isinstance(body.get(name), bool):
            raise VerificationError(f"assignment field {name!r} is missing or not a {kind.__name__}")
    return dict(body)


class Agent(TelemetryFlush):
    def __init__(self, config: AgentConfig) -> None:
        self.cfg = config
        root = Path(config.data_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.assignment_keys = list(config.assignment_keys if config.assignment_keys is not None else config.trusted_keys)
        assigners = {keys.key_id(k) for k in self.assignment_keys} if config.assignment_keys is not None else set()
        self.publisher_keys = [k for k in config.trusted_keys if keys.key_id(k) not in assigners]  # one role per key
        if not self.publisher_keys:
            raise DeviceError("trusted_keys: no publisher key left once the assignment keys are set apart")
        self.store = ModelStore(root / "models", self.publisher_keys, max_bundle_bytes=config.max_bundle_bytes)
        self.outbox = Outbox(root / "outbox.sqlite", max_messages=config.outbox_max_messages)
        self.telemetry = Telemetry(self.outbox, config.device_id, sample_rate=config.sample_rate,
                                   include_features=config.include_features, window_seconds=config.window_seconds)
        self.http = Http(config.server, config.token)
        self.downloads = root / "downloads"
        self.downloads.mkdir(exist_ok=True)
        self.state_path = root / "agent.json"
        self.scorer: Scorer | None = self.store.load_active()
        self._lock = threading.Lock()
        self.inputs_rejected = 0
        self._assignments: "queue.Queue[bytes]" = queue.Queue()
        self._stop = threading.Event()
        self.last_install: dict[str, Any] | None = None
        self.mqtt: MqttLink | None = None
        self._etag: str | None = None
        self._next_poll = 0.0
        self._next_status = 0.0
        self._status_attempt = 0
        self._status_retry_at = 0.0  # a failed report waits for its backoff, dirty or not
        self._stop_at: float | None = None
        self._net_wait = False  # the loop is in an exchange a signal may cut short
        self._next_flush = 0.0
        self._flush_attempt = 0
        self._status_dirty = True
        self._download_attempt = 0
        self._next_download = 0.0
        self.last_error: str | None = None
        self.last_telemetry_error: str | None = None
        self._report_first = bool(self.store.fallback or self.store.recovery)
        self._mqtt_epoch = 0
        self._heal()

    # -- public, offline ---------------------------------------------------------------------
    def score(self, record: Mapping[str, Any], entity_id: str | None = None) -> Prediction:
        scorer = self.scorer
        if scorer is None:
            raise DeviceError("no model is installed yet; the device is waiting for its first assignment")
        pred, features = scorer.score_detailed(record)
        self.telemetry.on_prediction(scorer.manifest, record, features, pred, entity_id)
        return pred

    def score_inbox(self) -> int:
        """MiNiFi-style: score every ``*.jsonl`` and ``*.csv`` dropped in ``input_dir`` (see inbox.py)."""
        if self.cfg.input_dir is None or self.scorer is None:
            return 0
        scored, rejected = score_folder(self.cfg.input_dir, self.score, self.scorer.fields)
        for name, reason in rejected:
            self.inputs_rejected += 1
            self.last_error = f"input {name} rejected: {reason}"[:500]
        return scored

    def record_outcome(self, entity_id: str, label: Any, observed_at: str | None = None) -> str:
        return self.telemetry.record_outcome(entity_id, label, observed_at)

    # -- state -----------------------------------------------------------------------------
    def _agent_state(self) -> dict[str, Any]:
        """agent.json, read defensively: a torn, edited or non-object file reads as empty
        (the model store, not this file, guards versions, so the worst case is a re-download)."""
        try:
            data = json.loads(self.state_path.read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        for key in ("pending", "installed"):
            if data.get(key) is not None and not _assignment_ok(data[key]):
                data[key] = None
        return data

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
            # set when the active slot failed verification and an older verified one took over:
            # the server sees active_version go down and can re-deliver the lost version
            "fallback": self.store.fallback,
            "store": {"floor": self.store.floor, "recovered": (self.store.recovery or {}).get("reason")},
        }

    # -- assignments -----------------------------------------------------------------------
    def _on_mqtt_assignment(self, payload: bytes) -> None:
        self._assignments.put(payload)

    def _poll_http(self) -> None:
        try:
            code, etag, body = self.http.get_json(f"/api/v1/devices/{self.cfg.device_id}/assignment", self._etag)
        except TransportError as exc:
            if exc.status == 404:
                return
            raise
        if code == 200 and body is not None:
            self._etag = etag
            self._assignments.put(json.dumps(body).encode())

    def _handle_assignment(self, payload: bytes) -> None:
        try:
            envelope = json.loads(payload)
            a = verify_assignment(envelope, self.assignment_keys, self.cfg.device_id)
        except (ValueError, EdgefleetError) as exc:
            log.warning("refused an assignment: %s", exc)
            self.last_install = {"result": f"refused assignment: {exc}", "ts": _iso(time.time())}
            self._status_dirty = True
            return
        rollout = a.get("rollout_id")
        log.info("assignment received: serial %s, version %s%s, bundle %s; model %s, %s, %s bytes", a["serial"], a["version"],
                 " (ordered rollback)" if a.get("rollback") else "", a["bundle_sha256"][:12], a.get("model") or "(not named)",
                 f"rollout {rollout}" if rollout is not None else "no rollout named", a["size"])
        state = self._agent_state()
        pending = state.get("pending")
        last = _int(state.get("serial"), -1)
        if pending and a["serial"] <= pending["serial"]:
            log.info("assignment serial %s: ignored, serial %s is already under way", a["serial"], pending["serial"])
            return
        if a["serial"] < last:
            log.warning("assignment serial %s: ignored as a replay (serial %s was already accepted)", a["serial"], last)
            return
        if a["serial"] == last and not self._lost(a, state):
            log.info("assignment serial %s: already done", a["serial"])
            return  # the retained copy of what is done
        active = self.scorer.version if self.scorer else None
        if active == a["version"] and not a.get("rollback"):
            log.info("assignment serial %s: v%s is already active", a["serial"], a["version"])
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
            log.warning("download of %s v%s failed (attempt %d, retry in %.1fs): %s", a.get("model") or "the model", a["version"],
                        self._download_attempt, self._next_download - time.monotonic(), exc)
            self.last_install = {"version": a["version"], "result": f"download pending: {exc}", "ts": _iso(time.time())}
            self._status_dirty = True
            return
        self._download_attempt = 0
        before = self.scorer.version if self.scorer else None
        try:
            res = self.store.install(dest, allow_downgrade=bool(a.get("rollback")))
            self.scorer = res.scorer or self.store.load_active()
            self.last_install = {"version": a["version"], "result": "installed", "seconds": round(res.seconds, 3), "ts": _iso(time.time())}
            installed: dict[str, Any] | None = a
            log.info("assignment serial %s: installed v%s%s in %.3fs", a["serial"], a["version"],
                     " (ordered rollback)" if a.get("rollback") else "", res.seconds)
            if a.get("rollback"):
                order = f"the fleet server's signed rollback assignment (serial {a['serial']}" + \
                    (f", rollout {a['rollout_id']})" if a.get("rollout_id") is not None else ")")
                if before != res.version:
                    log.info("rolled back %s v%s -> v%s: ordered by %s", res.name, before, res.version, order)
                else:  # e.g. the rollback that follows a refused update: the device never left this version
                    log.info("rollback to %s v%s ordered by %s: v%s was already active, nothing changed", res.name, res.version,
                             order, res.version)
        except InstallError as exc:
            log.error("assignment serial %s: v%s refused by the model store: %s", a["serial"], a["version"], exc)
            self.last_install = {"version": a["version"], "result": f"refused: {exc}", "ts": _iso(time.time())}
            installed = self._agent_state().get("installed")
        finally:
            dest.unlink(missing_ok=True)
        self._save_agent_state(serial=a["serial"], pending=None, installed=installed)
        self._status_dirty = True

    def _lost(self, a: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
        """True when the device should run ``a`` (already accepted) but does not: no model at
        all, or the store rebuilt or fell back below the version ``a`` installed."""
        if self.scorer is None:
            return True
        done = state.get("installed")
        return bool(done and done.get("serial") == a["serial"] and self.scorer.version != a["version"]
                    and (self.store.fallback or self.store.recovery))

    def _heal(self) -> None:
        """After a store fallback or rebuild, re-install the last installed assignment."""
        state = self._agent_state()
        done = state.get("installed")
        if done and not state.get("pending") and self._lost(done, state):
            self._save_agent_state(pending=done)
            log.warning("the device lost v%s (store fallback or rebuild); re-installing assignment serial %s", done["version"], done["serial"])
            self.last_install = {"version": done["version"], "result": "re-installing: the device lost this version "
                                 f"({(self.store.fallback or {}).get('reason') or (self.store.recovery or {}).get('reason') or 'no model'})"[:500],
                                 "ts": _iso(time.time())}

    def _send_status(self) -> None:
        status = self.status()
        if self.mqtt is not None and self.mqtt.publish("status", status, retain=True, timeout=self._publish_timeout):
            return
        self.http.post(f"/api/v1/devices/{self.cfg.device_id}/status", status)

    # -- loop ------------------------------------------------------------------------------
    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop_at = time.monotonic()  # the final flush's bound counts from here
        self._stop.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: stop, and cut a network wait of the loop short (see :meth:`_waiting`)."""
        self.stop()
        if self._net_wait:
            self._net_wait = False
            raise _Interrupted(signal.Signals(signum).name)

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """A network exchange of the loop that a signal may interrupt: the outbox rolls a cut
        transaction back and keeps unacknowledged messages, so the cost is a resend."""
        self._net_wait = True
        try:
            yield
        finally:
            self._net_wait = False

    def tick(self) -> None:
        now = time.monotonic()
        if self._report_first:  # say what the store found before repairing it
            self._report_first = False
            self._report_status(now)
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
        if not mqtt_up and now >= self._next_poll and not self._stop.is_set():
            self._next_poll = now + self.cfg.poll_seconds
            try:
                with self._waiting():
                    self._poll_http()
            except TransportError as exc:
                log.warning("assignment poll failed (next in %gs): %s", self.cfg.poll_seconds, exc)
        if now >= self._next_flush and self.outbox.depth() and not self._stop.is_set():
            with self._waiting():
                moved = self.flush_once()
            if moved:
                self._flush_attempt = 0
                self._next_flush = now  # keep draining
            elif self.outbox.inflight() and self.mqtt is not None and self.mqtt.connected.is_set():
                self._next_flush = now + min(self.cfg.tick_seconds, 0.2)  # waiting for the server's acks, not failing
            else:
                self._flush_attempt += 1
                self._next_flush = now + backoff_delay(self._flush_attempt, self.cfg.backoff_base, self.cfg.backoff_cap)
                log.warning("telemetry flush failed (attempt %d, %d message(s) waiting, retry in %.1fs): %s", self._flush_attempt,
                            self.outbox.depth(), self._next_flush - now, self.last_telemetry_error or "nothing was delivered")
        self.score_inbox()
        if now >= self._status_retry_at and (self._status_dirty or now >= self._next_status) and not self._stop.is_set():
            self._report_status(now)

    def _report_status(self, now: float) -> None:
        try:
            with self._waiting():
                self._send_status()
        except TransportError as exc:
            self._status_attempt += 1
            delay = backoff_delay(self._status_attempt, self.cfg.backoff_base, self.cfg.backoff_cap)
            self._next_status = self._status_retry_at = now + delay
            log.warning("status report failed: %s (attempt %d, retry in %.1fs)", exc, self._status_attempt, delay)
            return
        if self._status_attempt:
            log.info("status report delivered after %d failed attempt(s)", self._status_attempt)
        self._status_attempt = 0
        self._status_dirty = False
        self._next_status = now + self.cfg.status_seconds

    def run(self, *, install_signal_handlers: bool = True) -> int:
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        if self.cfg.mqtt:
            self.mqtt = MqttLink(self.cfg.mqtt, self.cfg.device_id, self.cfg.token, on_assignment=self._on_mqtt_assignment,
                                 on_ack=self._on_server_ack, reconnect_max=self.cfg.mqtt_reconnect_max)
            self.mqtt.start()
        self._log_startup()
        try:
            while not self._stop.is_set():
                try:
                    self.tick()
                except _Interrupted as sig:
                    log.info("%s cut a network wait short; stopping", sig)
                    break
                except (DeviceError, OSError) as exc:  # never die on a network or disk hiccup
                    self.last_error = f"agent error: {exc}"[:500]
                    log.error("agent tick failed: %s", exc)
                except Exception as exc:  # noqa: BLE001 - a device keeps scoring; the error is reported in status
                    self.last_error = f"agent error: {type(exc).__name__}: {exc}"[:500]
                    log.exception("agent tick failed unexpectedly (%s)", type(exc).__name__)
                self._stop.wait(self.cfg.tick_seconds)
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        """Close the window, then the bounded final flush and a last status in what is left of the bound."""
        deadline = (self._stop_at or time.monotonic()) + max(self.cfg.final_flush_seconds, 0.0)
        if self.telemetry.flush_window():
            log.info("closed the open sketch window into the outbox")
        reserve = min(1.0, self.cfg.final_flush_seconds / 4)  # keeps time for the last status
        self.final_flush(max(deadline - reserve - time.monotonic(), 0.0))
        left = max(deadline - time.monotonic(), 0.5)
        self._publish_timeout = left
        try:
            with self.http.bounded(left):
                self._send_status()
        except (TransportError, OSError) as exc:
            log.warning("last status report before exit failed: %s", exc)
        if self.mqtt is not None:
            self.mqtt.stop()
        self.outbox.close()
        log.info("agent %s stopped", self.cfg.device_id)

    def _log_startup(self) -> None:
        s, cfg = self.scorer, self.cfg
        if s is not None:
            prev = self.store.state().get("previous_version")
            model = f"{s.name} v{s.version} active ({s.backend_name}), " + (f"previous v{prev}" if prev is not None else "no previous version")
        else:
            model = "no model yet, waiting for the first assignment"
        if self.store.fallback or self.store.recovery:
            model += f"; the model store {'fell back' if self.store.fallback else 'was rebuilt'}: " \
                     f"{(self.store.fallback or self.store.recovery or {}).get('reason')}"
        log.info("agent %s starting: server %s, mqtt %s, data dir %s, %s; outbox %d message(s); inbox %s; "
                 "final flush on SIGTERM up to %gs", cfg.device_id, cfg.server, cfg.mqtt or "off (HTTP polling)",
                 Path(cfg.data_dir).resolve(), model, self.outbox.depth(), cfg.input_dir or "off", cfg.final_flush_seconds)
