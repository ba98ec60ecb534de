"""CLI verbs that talk to a fleet server: server, publish, rollout, devices, device enroll.

Admin verbs read the admin token from ``--token-file`` (default
``fleet-data/secrets/admin-token``, where ``edgefleet server`` writes it) or from the
``EDGEFLEET_ADMIN_TOKEN`` environment variable. Errors come back as one line naming the field.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from edgefleet.errors import EdgefleetError
from edgefleet.http import HttpClient
from edgefleet_cli import args as cli_types

DEFAULT_SERVER = "http://127.0.0.1:8080"


class ServerError(EdgefleetError):
    pass


class ServerStartError(ServerError):
    """``edgefleet server`` cannot start with an option; printed as ``edgefleet server: error: --OPT: ...``."""

    prog = "edgefleet server"


# ServerConfig field -> the `edgefleet server` option that sets it
SERVER_OPTIONS = {"data_dir": "--data-dir", "db_url": "--db", "mqtt_url": "--mqtt", "embedded_mqtt_port": "--mqtt-port",
                  "host": "--host", "port": "--port", "public_url": "--public-url", "trust_keys": "--trust-key",
                  "mqtt_admin": "--mqtt-admin"}


def _token(args: argparse.Namespace) -> str:
    env = os.environ.get("EDGEFLEET_ADMIN_TOKEN")
    if env:
        return env
    path = Path(args.token_file)
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ServerError(f"--token-file {path}: {exc.strerror or exc}; set EDGEFLEET_ADMIN_TOKEN or point --token-file at the server's secrets/admin-token") from exc


def AdminClient(server: str, token: str | None, *, timeout: float = 120.0) -> HttpClient:  # noqa: N802 - reads like a class
    return HttpClient(server, token, error=ServerError, timeout=timeout)


def call(args: argparse.Namespace, method: str, path: str, body: Any = None, raw: bytes | None = None, auth: bool = True) -> Any:
    return AdminClient(args.server, _token(args) if auth else None, timeout=60).request(method, path, body, raw)


def cmd_server(args: argparse.Namespace) -> int:
    public = args.public_url or f"http://{args.host}:{args.port}"
    admin = None
    if args.mqtt_admin:
        if not args.mqtt:
            raise ServerStartError(f"--mqtt-admin: cannot use {args.mqtt_admin!r}: it administers an external broker; give --mqtt too")
        if not args.mqtt_admin_password_file:
            raise ServerStartError(f"--mqtt-admin: cannot use {args.mqtt_admin!r}: give the admin's password in --mqtt-admin-password-file")
        try:
            password = Path(args.mqtt_admin_password_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ServerStartError(f"--mqtt-admin-password-file: cannot read {args.mqtt_admin_password_file!r}: {reason}") from None
        admin = (args.mqtt_admin, password)
    from fleet_server.core import ConfigError, ServerConfig
    from fleet_server.serve import serve_forever

    try:
        cfg = ServerConfig(data_dir=Path(args.data_dir), db_url=args.db, mqtt_url=args.mqtt, embedded_broker=not args.no_broker,
                           embedded_mqtt_port=args.mqtt_port,
                           host=args.host, port=args.port, public_url=public, trust_keys=[Path(p) for p in args.trust_key or []],
                           mqtt_admin=admin)
        return serve_forever(cfg)
    except ConfigError as exc:
        option = SERVER_OPTIONS.get(exc.field, exc.field)
        raise ServerStartError(f"{option}: cannot use {exc.value!r}: {exc.reason}") from None


def cmd_publish(args: argparse.Namespace) -> int:
    data = Path(args.bundle).read_bytes() if Path(args.bundle).is_file() else None
    if data is None:
        raise ServerError(f"{args.bundle}: publish takes the bundle's .tar archive")
    out = call(args, "POST", "/api/v1/models", raw=data)
    print(f"published {out['name']} v{out['version']} ({', '.join(out['formats'])}), sha256 {out['sha256'][:16]}...")
    for warning in out.get("warnings") or []:
        print(f"edgefleet: warning: {warning}", file=sys.stderr)
    return 0


def _print_rollout(r: dict[str, Any]) -> None:
    c = r["counts"]
    step = f"step {r['step_index'] + 1}/{len(r['steps'])} ({r['steps'][r['step_index']]:g}%)"
    width = 30
    filled = int(round(r["progress"] * width))
    print(f"rollout {r['id']}: {r['model']} v{r['version']} {r['state'].upper()} {step} "
          f"[{'#' * filled}{'.' * (width - filled)}] {c.get('installed', 0)}/{r['targets']} installed"
          + "".join(f", {k} {v}" for k, v in sorted(c.items()) if k != "installed"))
    if r.get("reason"):
        print(f"  reason: {r['reason']}")
    for d in r.get("incapable", [])[:10]:
        print(f"  incapable {d['device_id']}: {d['reason']}")


def cmd_rollout(args: argparse.Namespace) -> int:
    if args.action == "start":
        if not args.model:
            raise ServerError("rollout start: --model: give the model name")
        body: dict[str, Any] = {"model": args.model, "steps": args.steps,
                                "selector": {"groups": args.groups or [], "tags": args.tags or []},
                                "gates": {"max_failure_ratio": args.max_failure_ratio}}
        if args.version:
            body["version"] = args.version
        _print_rollout(call(args, "POST", "/api/v1/rollouts", body))
        return 0
    if args.action == "status":
        while True:
            rs = [call(args, "GET", f"/api/v1/rollouts/{args.id}")] if args.id else call(args, "GET", "/api/v1/rollouts")["rollouts"]
            for r in rs:
                _print_rollout(r)
            if not args.watch or all(r["state"] not in ("running", "paused") for r in rs):
                return 0
            time.sleep(2)
    if not args.id:
        raise ServerError(f"rollout {args.action}: give the rollout id")
    _print_rollout(call(args, "POST", f"/api/v1/rollouts/{args.id}/{args.action}"))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.action == "list":
        for m in call(args, "GET", "/api/v1/models")["models"]:
            for v in m["versions"]:
                metrics = v.get("metrics") or {}
                auroc = f"auroc {metrics['auroc']:.3f}" if "auroc" in metrics else ""
                parent = ((v.get("provenance") or {}).get("parent") or {}).get("version")
                print(f"{m['name']:16} v{v['version']:<4} {','.join(v['formats']):28} {auroc:12} {'from v' + str(parent) if parent else ''}")
        return 0
    if not args.name:
        raise ServerError("models show: give the model name")
    path = f"/api/v1/models/{args.name}" + (f"/versions/{args.version}" if args.version else "")
    m = call(args, "GET", path)
    print(f"{m['name']} v{m['version']}  sha256 {m['sha256'][:16]}...  formats {', '.join(m['formats'])}  uploaded {m['uploaded_at']}")
    for p in m.get("parity", []):
        print(f"  parity {p['format']:7} {p['runtime']:22} max |dp| {p['max_abs_diff']}  {'PASS' if p['passed'] else 'FAIL'}")
    prov = m.get("provenance") or {}
    if not prov:
        print("  provenance: uploaded by hand (no retraining record)")
        return 0
    print("  provenance:")
    for key in ("created_by", "trigger", "parent", "data_window", "rows", "metrics", "trainer", "approval"):
        if key in prov:
            print(f"    {key}: {json.dumps(prov[key], sort_keys=True)}")
    for r in prov.get("rollouts", []):
        print(f"    rollout {r.get('id')}: {r.get('state')} {r.get('reason') or ''}".rstrip())
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    if args.action == "list":
        for d in call(args, "GET", "/api/v1/devices")["devices"]:
            print(f"{d['device_id']:24} {d['group']:12} v{d['active_version'] or '-':<4} {str(d['health'] or '-'):10} last seen {d['last_seen'] or 'never'}")
        return 0
    if args.action == "token":
        out = call(args, "POST", "/api/v1/enrollment-tokens", {"group": args.group, "tags": args.tags or []})
        print(out["token"])
        return 0
    if not args.device_id:
        raise ServerError("devices show: give the device id")
    print(json.dumps(call(args, "GET", f"/api/v1/devices/{args.device_id}"), indent=2))
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    cred = call(args, "POST", "/api/v1/devices/enroll", {"token": args.token, "device_id": args.device_id}, auth=False)
    out = Path(args.out)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(cred, fh, indent=2)
    print(f"enrolled {cred['device_id']}; credential written to {out} (keep it secret)", file=sys.stderr)
    return 0


def add_parsers(sub: Any) -> None:
    def server_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", type=cli_types.http_url, default=os.environ.get("EDGEFLEET_SERVER", DEFAULT_SERVER), help="fleet server URL")
        p.add_argument("--token-file", default="fleet-data/secrets/admin-token", help="admin token file")

    s = sub.add_parser("server", help="run the fleet server (SQLite + embedded MQTT broker by default)")
    s.add_argument("--data-dir", default="fleet-data", help="database, artifacts and secrets (default ./fleet-data)")
    s.add_argument("--db", help="database URL, e.g. postgresql://user:pw@127.0.0.1/edgefleet (default SQLite in the data dir)")
    s.add_argument("--mqtt", type=cli_types.mqtt_url, help="external broker mqtt://host:port, e.g. Mosquitto (default: embedded broker)")
    s.add_argument("--no-broker", action="store_true", help="no MQTT at all: devices poll over HTTP")
    s.add_argument("--mqtt-admin", metavar="USER", help="dynamic-security admin of the --mqtt Mosquitto; the server then manages device accounts and ACLs")
    s.add_argument("--mqtt-admin-password-file", metavar="FILE", help="file holding that admin's password")
    s.add_argument("--mqtt-port", type=cli_types.port, default=1883, help="port of the embedded broker on 127.0.0.1 (default 1883)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=cli_types.port, default=8080, help="HTTP port, 0..65535 (0 picks a free one; default 8080)")
    s.add_argument("--public-url", type=cli_types.http_url, help="URL devices use to reach this server (default http://HOST:PORT)")
    s.add_argument("--trust-key", action="append", help="publisher public key (PEM) whose bundles are accepted; repeatable")
    s.set_defaults(func=cmd_server)

    p = sub.add_parser("publish", help="upload a signed bundle .tar to the fleet server's registry")
    p.add_argument("bundle")
    server_opts(p)
    p.set_defaults(func=cmd_publish)

    r = sub.add_parser("rollout", help="start and steer staged rollouts")
    r.add_argument("action", choices=["start", "status", "pause", "resume", "abort", "rollback"])
    r.add_argument("id", nargs="?", help="rollout id (status without it lists all)")
    r.add_argument("--model", help="start: model name")
    r.add_argument("--version", type=cli_types.positive_int, help="start: version (default newest)")
    r.add_argument("--steps", type=cli_types.percentages, default=[10.0, 50.0, 100.0], help="start: rising percentages ending at 100, e.g. 5,25,100")
    r.add_argument("--groups", type=cli_types.names, help="start: comma-separated device groups")
    r.add_argument("--tags", type=cli_types.names, help="start: comma-separated device tags")
    r.add_argument("--max-failure-ratio", type=cli_types.number(0, 1), default=0.0, help="start: install/health failure ratio that halts the rollout")
    r.add_argument("--watch", action="store_true", help="status: refresh until it settles")
    server_opts(r)
    r.set_defaults(func=cmd_rollout)

    m = sub.add_parser("models", help="list registered models, or show one with its parity and provenance")
    m.add_argument("action", choices=["list", "show"])
    m.add_argument("name", nargs="?")
    m.add_argument("--version", type=cli_types.positive_int, help="show: a version (default newest)")
    server_opts(m)
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("devices", help="list or show devices; create enrollment tokens")
    d.add_argument("action", choices=["list", "show", "token"])
    d.add_argument("device_id", nargs="?")
    d.add_argument("--group", default="default", help="token: group of the device that enrolls with it")
    d.add_argument("--tags", type=cli_types.names, help="token: comma-separated tags")
    server_opts(d)
    d.set_defaults(func=cmd_devices)


def add_enroll_parser(dsub: Any) -> None:
    e = dsub.add_parser("enroll", help="exchange a one-time enrollment token for this device's credential")
    e.add_argument("--server", type=cli_types.http_url, default=os.environ.get("EDGEFLEET_SERVER", DEFAULT_SERVER))
    e.add_argument("--token", required=True, help="enrollment token from `edgefleet devices token`")
    e.add_argument("--device-id", required=True)
    e.add_argument("--out", required=True, help="credential file to write (mode 0600)")
    e.set_defaults(func=cmd_enroll)
