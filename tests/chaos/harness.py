"""The chaos run: a staged rollout and a telemetry flow while the broker, the server and 20 % of
the devices are SIGKILLed at seeded random moments and restarted.

Everything is a real process on 127.0.0.1:

- the fleet server is ``tests/fleet_server/server_process.py`` in its own process (same data dir, same
  database, same ports after every restart); on the "embedded" stack it runs the embedded
  broker and SQLite, so SIGKILLing the server kills the broker too;
- on the "mosquitto" stack, Mosquitto with the dynamic-security plugin
  (``fleet_server.mqtt.dynsec.DynsecBroker``, the server manages device accounts) and a real
  PostgreSQL;
- devices are ``tests/chaos/devices.py`` processes (several devices each, each device with its
  own folder), enrolled over HTTP with one-time tokens.

``run_chaos`` returns a ``ChaosResult`` with the figures; the test asserts on them. Every wait
is bounded, and ``Chaos.close`` kills every process it started (also on failure).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.chaos.devices import read_ledger
from tests.support.mqtt_broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_until(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (OSError, ValueError) as exc:  # the server is restarting
            last = f"{type(exc).__name__}: {exc}"
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {str(last)[:800]})")


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        return subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _sigkill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def _stop(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _sigkill(proc)


class ServerProc:
    def __init__(self, workdir: Path, *, db_url: str | None, mqtt_url: str | None, trust_key: Path,
                 mqtt_admin: tuple[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.mqtt_port = free_port() if mqtt_url is None else None
        self.data_dir = workdir / "fleet"
        self.url = f"http://127.0.0.1:{self.port}"
        self.mqtt_url = mqtt_url or f"mqtt://127.0.0.1:{self.mqtt_port}"
        self.conf = workdir / "server.json"
        self.conf.write_text(json.dumps({
            "data_dir": str(self.data_dir), "db_url": db_url, "mqtt_url": mqtt_url, "embedded_mqtt_port": self.mqtt_port,
            "port": self.port, "trust_keys": [str(trust_key)], "mqtt_admin": list(mqtt_admin) if mqtt_admin else None,
            "reconcile_seconds": 0.2,
        }))
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None

    def start(self, wait: bool = True) -> "ServerProc":
        self.proc = _spawn([sys.executable, "-m", "tests.fleet_server.server_process", str(self.conf)], self.log)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"fleet server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                return r.status == 200
        wait_until(up, timeout, "the fleet server to answer /healthz", every=0.1)
        self.token = (self.data_dir / "secrets" / "admin-token").read_text().strip()

    def kill(self) -> None:
        _sigkill(self.proc)

    def stop(self) -> None:
        _stop(self.proc)

    def api(self, method: str, path: str, body: Any = None, raw: bytes | None = None, timeout: float = 30) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text


class BrokerProc:
    """Mosquitto with dynamic security on a fixed loopback port; restart keeps its accounts."""

    def __init__(self, workdir: Path) -> None:
        from fleet_server.mqtt.dynsec import DynsecBroker

        self.broker = DynsecBroker(workdir / "mosquitto", port=free_port())

    def start(self) -> "BrokerProc":
        self.broker.start()
        return self

    def kill(self) -> None:
        _sigkill(self.broker.proc)
        self.broker.proc = None

    def stop(self) -> None:
        self.broker.stop()


class DeviceProc:
    def __init__(self, index: int, conf: Path, log: Path) -> None:
        self.index, self.conf, self.log = index, conf, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _spawn([sys.executable, "-m", "tests.chaos.devices", str(self.conf)], self.log)

    def kill(self) -> None:
        _sigkill(self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Kill:
    component: str          # "server", "broker", "devices[3]"
    at: float               # seconds after the rollout started (before it fires: the fallback moment)
    down: float             # seconds before the restart
    context: str = ""       # what the rollout was doing just before
    after: int = 0          # fires once this many devices run the target version


@dataclass
class ChaosResult:
    stack: str
    devices: int
    converged_server: int = 0      # devices whose stored active_version is the target
    converged_devices: int = 0     # devices whose own state says they run the target
    rollout: dict[str, Any] = field(default_factory=dict)
    sent: int = 0
    stored: int = 0
    lost: int = 0
    unknown: int = 0               # stored ids no device ever sent
    duplicates: int = 0            # telemetry rows minus distinct ids
    lost_sample: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    device_errors: list[str] = field(default_factory=list)
    lost_by_device: dict[str, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)   # exception lines in the server's log
    t0_wall: float = 0.0                                      # unix time the measured rollout started
    lost_window: tuple[float, float] | None = None            # lost ids accepted between these (s after t0)

    def report(self) -> str:
        r = self.rollout
        lines = [
            f"chaos [{self.stack}]: {self.devices} devices; rollout v{r.get('version')} steps {r.get('steps')} -> {r.get('state')} "
            f"{r.get('counts')}",
            f"  converged: {self.converged_server}/{self.devices} (server view), {self.converged_devices}/{self.devices} (device state)",
            f"  telemetry ids sent {self.sent}, stored {self.stored}, lost {self.lost}, duplicates {self.duplicates}, "
            f"unknown {self.unknown}",
            "  kills survived: " + "; ".join(f"{k.component} SIGKILL at +{k.at:.2f}s, down {k.down:.2f}s ({k.context})" for k in self.kills),
            "  server counters: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())),
            "  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()),
        ]
        if self.lost:
            w = self.lost_window or (0.0, 0.0)
            worst = dict(sorted(self.lost_by_device.items(), key=lambda kv: -kv[1])[:8])
            lines.append(f"  lost ids were accepted by devices between +{w[0]:.2f}s and +{w[1]:.2f}s; "
                         f"{len(self.lost_by_device)} devices lost some, most: {worst}; sample {self.lost_sample[:2]}")
        if self.server_errors:
            lines.append(f"  server log errors: {self.server_errors}")
        if self.device_errors:
            lines.append(f"  device log errors: {self.device_errors[:5]}")
        return "\n".join(lines)


class Chaos:
    def __init__(self, workdir: Path, stack: str, *, n_devices: int, n_procs: int, seed: int, bundles: dict[int, Path],
                 trust_key: Path, pg_url: str | None = None, produce_every: float = 0.25, produce_n: int = 5,
                 kill_window: tuple[float, float] = (0.3, 6.0), budget: float = 600.0) -> None:
        if stack not in ("embedded", "mosquitto"):
            raise ValueError(f"stack: {stack!r} is not 'embedded' or 'mosquitto'")
        self.workdir, self.stack, self.n, self.n_procs = workdir, stack, n_devices, n_procs
        self.rng = random.Random(seed)
        self.seed = seed
        self.bundles, self.trust_key, self.pg_url = bundles, trust_key, pg_url
        self.produce_every, self.produce_n = produce_every, produce_n
        self.kill_window = kill_window
        self.deadline = time.time() + budget
        self.broker: BrokerProc | None = None
        self.server: ServerProc | None = None
        self.procs: list[DeviceProc] = []
        self.dev_dirs: dict[str, Path] = {}
        self.produce_stop = workdir / "produce-stop"
        self.exit_file = workdir / "devices-exit"
        self.result = ChaosResult(stack, n_devices)

    # -- set-up --------------------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        mqtt_url = admin = None
        if self.stack == "mosquitto":
            self.broker = BrokerProc(self.workdir).start()
            mqtt_url = self.broker.broker.url
            admin = (self.broker.broker.admin_user, self.broker.broker.admin_password)
        self.server = ServerProc(self.workdir, db_url=self.pg_url, mqtt_url=mqtt_url, trust_key=self.trust_key, mqtt_admin=admin).start()
        for v, path in sorted(self.bundles.items()):
            code, body = self.server.api("POST", "/api/v1/models", raw=path.read_bytes())
            assert code == 201, f"registering v{v}: HTTP {code} {body!r}"
        self.result.seconds["servers up"] = time.monotonic() - t0

        from edgefleet_cli.samples.telco_churn import CATEGORICAL, NUMERIC, make_telco_churn

        df = make_telco_churn(64, seed=self.seed)
        records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in df[CATEGORICAL + NUMERIC].to_dict("records")]
        mqtt_host, mqtt_port = "127.0.0.1", int(self.server.mqtt_url.rsplit(":", 1)[1])
        ids = [f"chaos-{i:04d}" for i in range(self.n)]
        per = [ids[i::self.n_procs] for i in range(self.n_procs)]
        for k, group in enumerate(per):
            specs = []
            for dev in group:
                code, tok = self.server.api("POST", "/api/v1/enrollment-tokens", {"group": "chaos", "tags": []})
                assert code == 201, tok
                d = self.workdir / "devices" / dev
                self.dev_dirs[dev] = d
                specs.append({"device_id": dev, "enroll_token": tok["token"], "dir": str(d)})
            conf = self.workdir / f"devices-{k}.json"
            conf.write_text(json.dumps({
                "devices": specs, "server_url": self.server.url, "mqtt_host": mqtt_host, "mqtt_port": mqtt_port,
                "seed": self.seed, "produce_every": self.produce_every, "produce_n": self.produce_n, "records": records,
                "produce_stop": str(self.produce_stop), "exit_file": str(self.exit_file), "deadline": self.deadline,
                "log": str(self.workdir / f"devices-{k}.events.log"),
            }))
            self.procs.append(DeviceProc(k, conf, self.workdir / f"devices-{k}.log"))
        t1 = time.monotonic()
        for p in self.procs:
            p.start()
        wait_until(lambda: self._reported() == self.n, 90, f"all {self.n} devices to enroll, connect and report")
        self.result.seconds["devices up"] = time.monotonic() - t1

    def _devices(self) -> list[dict[str, Any]]:
        assert self.server is not None
        code, body = self.server.api("GET", "/api/v1/devices", timeout=10)
        if code != 200:
            raise OSError(f"GET /api/v1/devices: HTTP {code}")
        return list(body["devices"])

    def _reported(self) -> int:
        self._check_devices_alive()
        return sum(bool(d["capabilities"]) for d in self._devices())

    def _check_devices_alive(self) -> None:
        for p in self.procs:
            if p.proc is not None and p.proc.poll() not in (None, -signal.SIGKILL):
                raise AssertionError(f"device process {p.index} exited with {p.proc.returncode}: {p.log.read_text()[-2000:]}")

    def rollout(self, version: int, steps: list[float], timeout: float) -> dict[str, Any]:
        assert self.server is not None
        code, r = self.server.api("POST", "/api/v1/rollouts", {"model": "churn", "version": version, "steps": steps})
        assert code == 201, r
        return r

    def rollout_state(self, rid: int) -> dict[str, Any]:
        assert self.server is not None
        code, st = self.server.api("GET", f"/api/v1/rollouts/{rid}", timeout=10)
        if code != 200:
            raise OSError(f"GET /api/v1/rollouts/{rid}: HTTP {code}")
        return dict(st)

    # -- chaos ---------------------------------------------------------------------------------
    def schedule(self) -> list[Kill]:
        """Each kill fires once a seeded random number of devices (1 .. N-2) runs the target, so
        it lands inside the rollout; ``kill_window[1]`` seconds is the fallback if it never does."""
        hi = self.kill_window[1]

        def kill(component: str) -> Kill:
            return Kill(component, hi, self.rng.uniform(0.5, 2.0), after=self.rng.randint(1, max(1, self.n - 2)))
        kills = [kill("server")]
        # The embedded broker lives in the server's process: its "broker kill" is a second server kill.
        kills.append(kill("broker" if self.stack == "mosquitto" else "server"))
        n_kill = max(1, round(0.2 * self.n_procs))
        kills += [kill(f"devices[{k}]") for k in self.rng.sample(range(self.n_procs), n_kill)]
        return sorted(kills, key=lambda k: k.after)

    def _context(self, rid: int, on_target: int) -> str:
        view = f"{on_target}/{self.n} devices on target"
        try:
            st = self.rollout_state(rid)
        except (OSError, ValueError):
            return f"server down, {view}"
        return f"rollout {st['state']} step {st['step_index'] + 1}/{len(st['steps'])}, {view}"

    def run_kills(self, rid: int, t0: float, version: int) -> None:
        assert self.server is not None
        kills = self.schedule()
        pending = list(kills)
        restarts: list[tuple[float, Kill]] = []
        server_down = 0  # overlapping server kills: restart only when the last one's pause is over
        while pending or restarts:
            now = time.monotonic()
            if time.time() > self.deadline:
                raise AssertionError("chaos schedule did not finish before the run's budget")
            on_target = sum(s.get("active_version") == version for s in self.device_states().values())
            for k in [k for k in pending if on_target >= k.after or now - t0 >= k.at]:
                pending.remove(k)
                k.context = self._context(rid, on_target) if not server_down else f"server down, {on_target}/{self.n} devices on target"
                k.at = time.monotonic() - t0
                if k.component == "server":
                    server_down += 1
                    self.server.kill()
                elif k.component == "broker":
                    assert self.broker is not None
                    self.broker.kill()
                else:
                    self.procs[int(k.component[8:-1])].kill()
                restarts.append((time.monotonic() + k.down, k))
            for due, k in [r for r in restarts if r[0] <= time.monotonic()]:
                restarts.remove((due, k))
                if k.component == "server":
                    server_down -= 1
                    if not server_down:
                        self.server.start(wait=False)
                elif k.component == "broker":
                    assert self.broker is not None
                    self.broker.start()
                else:
                    self.procs[int(k.component[8:-1])].start()
            time.sleep(0.05)
        self.result.kills = kills
        self.server.wait_ready()

    # -- checks --------------------------------------------------------------------------------
    def device_states(self) -> dict[str, dict[str, Any]]:
        out = {}
        for dev, d in self.dev_dirs.items():
            p = d / "state.json"
            out[dev] = json.loads(p.read_text()) if p.exists() else {}
        return out

    def outbox_depth(self) -> int:
        total = 0
        for d in self.dev_dirs.values():
            with sqlite3.connect(f"file:{d / 'outbox.sqlite'}?mode=ro", uri=True, timeout=10) as db:
                total += int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        return total

    def sent_ids(self) -> dict[str, dict[str, float]]:
        """Per device: {id: time accepted} of every id in its ledger, plus any still in its outbox
        (already in the ledger unless a SIGKILL fell between the two writes)."""
        out = {}
        for dev, d in self.dev_dirs.items():
            ids = read_ledger(d / "sent.log")
            with sqlite3.connect(f"file:{d / 'outbox.sqlite'}?mode=ro", uri=True, timeout=10) as db:
                for mid, created in db.execute("SELECT id, created FROM outbox"):
                    ids.setdefault(mid, created)
            out[dev] = ids
        return out

    def stored_rows(self) -> list[tuple[str, str]]:
        from sqlalchemy import create_engine, text

        assert self.server is not None
        url = self.pg_url or f"sqlite:///{self.server.data_dir / 'fleet.sqlite'}"
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return [(r[0], r[1]) for r in conn.execute(text("SELECT id, device_id FROM telemetry"))]
        finally:
            engine.dispose()

    def keep_logs(self, dest: Path) -> None:
        """Copy the server, broker and device-process logs out of pytest's rotating tmp dirs."""
        import shutil

        dest.mkdir(parents=True, exist_ok=True)
        for p in [*self.workdir.glob("*.log"), *self.workdir.glob("mosquitto/*.log")]:
            shutil.copy(p, dest / p.name)

    def close(self) -> None:
        self.exit_file.touch()
        deadline = time.monotonic() + 10
        for p in self.procs:
            if p.proc is not None:
                try:
                    p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
        if self.server is not None:
            self.server.stop()
        if self.broker is not None:
            self.broker.stop()


def run_chaos(chaos: Chaos, version: int = 2, steps: list[float] | None = None, converge_timeout: float = 120.0,
              drain_timeout: float = 90.0) -> ChaosResult:
    """Warm-up rollout of v1 to every device, then the measured rollout of ``version`` with kills."""
    res = chaos.result
    steps = steps or [10, 50, 100]
    t_all = time.monotonic()
    chaos.start()
    assert chaos.server is not None

    t = time.monotonic()
    warm = chaos.rollout(1, [100], 60)
    wait_until(lambda: chaos.rollout_state(warm["id"])["state"] == "completed", 60, "the warm-up v1 rollout to complete")
    res.seconds["warm-up v1"] = time.monotonic() - t

    t0 = time.monotonic()
    res.t0_wall = time.time()
    r = chaos.rollout(version, steps, converge_timeout)
    chaos.run_kills(r["id"], t0, version)
    res.seconds["kills"] = time.monotonic() - t0

    def converged() -> bool:
        chaos._check_devices_alive()
        st = chaos.rollout_state(r["id"])
        res.rollout = {k: st[k] for k in ("version", "steps", "state", "counts", "step_index", "reason")}
        res.converged_server = sum(d["active_version"] == version for d in chaos._devices())
        res.converged_devices = sum(s.get("active_version") == version for s in chaos.device_states().values())
        return st["state"] in ("completed", "halted") and res.converged_server == res.converged_devices == chaos.n
    try:
        wait_until(converged, converge_timeout, f"every device to converge on v{version}")
    except AssertionError as exc:
        res.device_errors.append(str(exc)[-1200:])
    res.seconds["converge"] = time.monotonic() - t0

    t = time.monotonic()
    chaos.produce_stop.touch()
    time.sleep(chaos.produce_every * 2)  # a producer that read "not yet" just before finishes its put
    sent_n = lambda: sum(len(v) for v in chaos.sent_ids().values())  # noqa: E731
    seen: dict[str, Any] = {"stored": -1, "since": time.monotonic()}

    def drained() -> bool:
        if chaos.outbox_depth():
            seen["since"] = time.monotonic()
            return False
        stored = len(chaos.stored_rows())
        if stored != seen["stored"]:
            seen["stored"], seen["since"] = stored, time.monotonic()
        # every outbox is empty: done once the server stored all, or nothing arrived for 5 s (lost)
        return stored >= sent_n() or time.monotonic() - seen["since"] > 5.0
    try:
        wait_until(drained, drain_timeout, "every outbox to drain and the server to store what was sent", every=0.5)
    except AssertionError as exc:
        res.device_errors.append(str(exc)[:300])
    res.seconds["drain"] = time.monotonic() - t

    sent = chaos.sent_ids()
    rows = chaos.stored_rows()
    stored_ids = {i for i, _ in rows}
    created = {i: ts for ids in sent.values() for i, ts in ids.items()}
    all_sent = set(created)
    res.sent, res.stored = len(all_sent), len(stored_ids)
    lost = all_sent - stored_ids
    if lost:  # when, relative to the measured rollout's start, the lost ids were accepted
        times = sorted(created[i] - res.t0_wall for i in lost)
        res.lost_window = (times[0], times[-1])
    res.lost, res.unknown, res.duplicates = len(lost), len(stored_ids - all_sent), len(rows) - len(stored_ids)
    res.lost_sample = sorted(lost)[:5]
    for dev, ids in sent.items():
        if set(ids) - stored_ids:
            res.lost_by_device[dev] = len(set(ids) - stored_ids)
    code, counters = chaos.server.api("GET", "/api/v1/counters")
    res.counters = {k: v for k, v in (counters or {}).items() if k.startswith(("telemetry", "mqtt", "status"))} if code == 200 else {}
    for log in sorted(chaos.workdir.glob("devices-*.events.log")):
        res.device_errors += [ln for ln in log.read_text().splitlines() if "refused" in ln][:3]
    log = chaos.server.log.read_text(errors="replace").splitlines()
    import re

    errs = [re.sub(r"Task-\d+", "Task-N", ln.strip())[:160] for ln in log if "Error" in ln and not ln.startswith(" ")]
    res.server_errors = [f"{n} x {e}" for e, n in sorted(((e, errs.count(e)) for e in set(errs)), key=lambda x: -x[1])][:5]
    res.seconds["total"] = time.monotonic() - t_all
    return res
