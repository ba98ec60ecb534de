"""Retraining trigger: a fired alert starts the model's ``retrain`` command as a subprocess.

The fleet server never imports the compiler; it closes the loop with a process. A model's
policy (``PUT /api/v1/models/<name>/policy``) may hold::

    "retrain": {"command": ["edgefleet", "retrain", "--server", "{server}", "--model", "{model}",
                            "--alert", "{alert}", "--trainer", "pkg.mod:train", ...],
                "on": ["performance"],        # alert kinds that trigger it (default both)
                "approval": false,            # true: register the challenger, roll out on approval
                "cooldown_seconds": 3600,     # no second start within this time
                "timeout_seconds": 1800,      # the process group is killed after this
                "cwd": null}                  # working folder (default: the server's)

Placeholders: ``{server}`` (the server's public URL), ``{model}``, ``{alert}`` (the alert id),
``{version}`` (the alerting version) and ``{data_dir}``. The command must be an ``edgefleet
retrain`` invocation: the policy API takes an admin token, not a shell, so the server runs only
its own retrain verb, as ``<this python> -m edgefleet_cli.main retrain ...``. The child gets the admin
token in ``EDGEFLEET_ADMIN_TOKEN``; with ``approval`` the server adds ``--approve-required``.

Bounds: one job per model at a time, ``cooldown_seconds`` between starts, at most
``MAX_JOBS`` jobs in the whole server, a timeout, and the monitor never waits: ``on_alerts``
only calls ``Popen``; a watcher thread reaps the process. Every start, skip and exit is a line in
``<data_dir>/retrain/jobs.jsonl`` (``GET /api/v1/models/<name>/retrains``); the child's output
goes to ``<data_dir>/retrain/<model>-<job>.log``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from fleet_server.errors import FleetError

log = logging.getLogger(__name__)

MAX_JOBS = 2
PLACEHOLDERS = ("server", "model", "alert", "version", "data_dir")
KINDS = ("drift", "performance")


@dataclass(frozen=True)
class RetrainPolicy:
    command: tuple[str, ...]
    on: tuple[str, ...] = KINDS
    approval: bool = False
    cooldown_seconds: float = 3600.0
    timeout_seconds: float = 1800.0
    cwd: str | None = None


def parse(value: Any) -> RetrainPolicy:
    """Validate a policy's ``retrain`` object; FleetError names the field."""
    if isinstance(value, RetrainPolicy):
        return value
    if not isinstance(value, Mapping):
        raise FleetError("policy.retrain: expected an object with a 'command' list, or null")
    known = {"command", "on", "approval", "cooldown_seconds", "timeout_seconds", "cwd"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise FleetError(f"policy.retrain.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
    cmd = value.get("command")
    if not isinstance(cmd, (list, tuple)) or not all(isinstance(c, str) for c in cmd) or len(cmd) < 2:
        raise FleetError("policy.retrain.command: expected a list of strings, e.g. [\"edgefleet\", \"retrain\", ...]")
    if cmd[0] != "edgefleet" or cmd[1] != "retrain":
        raise FleetError(f"policy.retrain.command: must start with [\"edgefleet\", \"retrain\"] (the server runs only its own retrain verb), got {list(cmd[:2])}")
    for c in cmd:
        try:
            c.format(**{k: "" for k in PLACEHOLDERS})
        except (KeyError, IndexError, ValueError) as exc:
            raise FleetError(f"policy.retrain.command: {c!r} has an unknown placeholder {exc} (known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})") from None
    on = value.get("on", list(KINDS))
    if not isinstance(on, (list, tuple)) or not on or any(k not in KINDS for k in on):
        raise FleetError(f"policy.retrain.on: expected a non-empty list of {list(KINDS)}, got {on!r}")
    approval = value.get("approval", False)
    if not isinstance(approval, bool):
        raise FleetError(f"policy.retrain.approval: expected true or false, got {approval!r}")
    out: dict[str, Any] = {}
    for key, default in (("cooldown_seconds", 3600.0), ("timeout_seconds", 1800.0)):
        v = value.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
            raise FleetError(f"policy.retrain.{key}: expected a non-negative number, got {v!r}")
        out[key] = float(v)
    if out["timeout_seconds"] <= 0:
        raise FleetError("policy.retrain.timeout_seconds: must be > 0")
    cwd = value.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise FleetError(f"policy.retrain.cwd: expected a folder path or null, got {cwd!r}")
    return RetrainPolicy(command=tuple(cmd), on=tuple(dict.fromkeys(on)), approval=approval, cwd=cwd, **out)


class _Launcher:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.last_start: dict[str, float] = {}


_launchers: "weakref.WeakKeyDictionary[Any, _Launcher]" = weakref.WeakKeyDictionary()


def _dir(fleet: Any) -> Path:
    d = Path(fleet.data_dir) / "retrain"
    d.mkdir(exist_ok=True)
    return d


def _log(fleet: Any, entry: dict[str, Any]) -> None:
    with open(_dir(fleet) / "jobs.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"ts": time.time(), **entry}, sort_keys=True) + "\n")


def jobs(fleet: Any, model: str | None = None) -> list[dict[str, Any]]:
    """The job log (started, skipped, exited), oldest first."""
    path = _dir(fleet) / "jobs.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if model is None or e.get("model") == model:
            out.append(e)
    return out


def command_for(fleet: Any, rp: RetrainPolicy, alert: Mapping[str, Any]) -> list[str]:
    values = {"server": fleet.cfg.public_url, "model": alert["model"], "alert": str(alert["id"]),
              "version": str(alert["version"]), "data_dir": str(fleet.data_dir)}
    argv = [c.format(**values) for c in rp.command]
    if rp.approval and "--approve-required" not in argv:
        argv.append("--approve-required")
    return [sys.executable, "-m", "edgefleet_cli.main", *argv[1:]]


def _watch(fleet: Any, launcher: _Launcher, model: str, job: str, proc: subprocess.Popen[bytes], timeout: float, t0: float) -> None:
    try:
        code: int | None = proc.wait(timeout=timeout)
        result = "succeeded" if code == 0 else f"exited {code}"
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        code = proc.wait()
        result = f"killed after the {timeout:g}s timeout"
    with launcher.lock:
        if launcher.running.get(model) is proc:
            del launcher.running[model]
    _log(fleet, {"event": "exited", "model": model, "job": job, "returncode": code, "result": result,
                 "seconds": round(time.time() - t0, 1)})
    try:
        with fleet.session() as s:
            fleet.bump(s, "retrain_succeeded" if code == 0 else "retrain_failed")
    except Exception as exc:  # noqa: BLE001 - a closed database at shutdown must not kill the watcher loudly
        log.warning("retrain %s: could not count the finished job (exit %s): %s: %s", model, code, type(exc).__name__, exc)


def on_alerts(fleet: Any, events: Iterable[Mapping[str, Any]], policies: Mapping[str, Any]) -> list[str]:
    """Start the retrain command of each model with a newly fired alert of a configured kind.

    Called by ``service.run_monitor`` after delivery. Never raises and never waits; returns the
    ids of the jobs it started.
    """
    started: list[str] = []
    try:
        launcher = _launchers.setdefault(fleet, _Launcher())
        first: dict[str, Mapping[str, Any]] = {}
        for e in events:
            a = e["alert"]
            rp = getattr(policies.get(a["model"]), "retrain", None)
            if e["event"] == "fired" and rp is not None and a["kind"] in rp.on and a["model"] not in first:
                first[a["model"]] = a
        for model, alert in first.items():
            rp = policies[model].retrain
            job = uuid.uuid4().hex[:12]
            with launcher.lock:
                busy = launcher.running.get(model)
                if busy is not None and busy.poll() is None:
                    _log(fleet, {"event": "skipped", "model": model, "alert": alert["id"], "reason": f"a retrain of {model} is still running"})
                    continue
                if sum(p.poll() is None for p in launcher.running.values()) >= MAX_JOBS:
                    _log(fleet, {"event": "skipped", "model": model, "alert": alert["id"], "reason": f"{MAX_JOBS} retrain jobs are running"})
                    continue
                since = time.time() - launcher.last_start.get(model, -float("inf"))
                if since < rp.cooldown_seconds:
                    _log(fleet, {"event": "skipped", "model": model, "alert": alert["id"],
                                 "reason": f"cooldown: last start {since:.0f}s ago < {rp.cooldown_seconds:g}s"})
                    continue
                argv = command_for(fleet, rp, alert)
                env = {**os.environ, "EDGEFLEET_ADMIN_TOKEN": fleet.secrets.admin_token, "PYTHONUNBUFFERED": "1"}
                log_path = _dir(fleet) / f"{model}-{job}.log"
                with open(log_path, "wb") as out:
                    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                            cwd=rp.cwd or None, start_new_session=True)
                launcher.running[model] = proc
                launcher.last_start[model] = time.time()
            _log(fleet, {"event": "started", "model": model, "job": job, "alert": alert["id"], "alert_kind": alert["kind"],
                         "alert_subject": alert["subject"], "pid": proc.pid, "argv": argv[3:], "log": str(log_path),
                         "approval": rp.approval})
            with fleet.session() as s:
                fleet.bump(s, "retrain_started")
            threading.Thread(target=_watch, args=(fleet, launcher, model, job, proc, rp.timeout_seconds, time.time()),
                             name=f"retrain-{model}", daemon=True).start()
            started.append(job)
    except Exception as exc:  # noqa: BLE001 - the monitor pass must not fail because a retrain could not start
        log.error("retrain: could not start a job: %s: %s", type(exc).__name__, exc, exc_info=exc)
        try:
            _log(fleet, {"event": "error", "error": f"{type(exc).__name__}: {exc}"})
        except OSError as log_exc:
            log.warning("retrain: could not write the job log: %s", log_exc)
    return started
