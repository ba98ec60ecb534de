"""CLI verbs that talk to a fleet server: server, publish, rollout, models, devices, alerts, policies, agent enroll.

Admin verbs take the server and the admin token from, in this order: ``--server`` /
``--token-file``; ``EDGEFLEET_SERVER`` / ``EDGEFLEET_ADMIN_TOKEN``; a config file
(:mod:`edgefleet_cli.config`); the defaults ``http://127.0.0.1:8080`` and
``./fleet-data/secrets/admin-token`` (where ``edgefleet server`` writes it). Reading verbs print text,
or the server's JSON with ``--json``. Errors come back as one line naming the field.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edgefleet.errors import EdgefleetError
from edgefleet.http import HttpClient
from edgefleet_cli import args as cli_types
from edgefleet_cli.config import DEFAULT_SERVER

__all__ = ["DEFAULT_SERVER", "AdminClient", "ServerError", "add_agent_parsers", "add_parsers"]


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
    token = getattr(args, "admin_token", None)  # EDGEFLEET_ADMIN_TOKEN or the config file's (edgefleet_cli.config.apply)
    if token:
        return str(token)
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
        cfg = ServerConfig(data_dir=Path(args.data_dir), db_url=args.db, scores_db_url=args.scores_db, mqtt_url=args.mqtt, embedded_broker=not args.no_broker,
                           embedded_mqtt_port=args.mqtt_port,
                           host=args.host, port=args.port, public_url=public, trust_keys=[Path(p) for p in args.trust_key or []],
                           mqtt_admin=admin)
        return serve_forever(cfg)
    except ConfigError as exc:
        option = SERVER_OPTIONS.get(exc.field, exc.field)
        reason = exc.reason
        if exc.field in ("port", "embedded_mqtt_port") and "address already in use" in reason.lower():
            # amqtt's bind error is a paragraph; the operator needs the port and the option that changes it
            reason = (f"cannot listen on {args.host if exc.field == 'port' else '127.0.0.1'}:{exc.value}: address already in use "
                      f"(another process holds it); stop it or choose another port with {option} (0 picks a free one)")
        raise ServerStartError(f"{option}: cannot use {exc.value!r}: {reason}") from None


def cmd_publish(args: argparse.Namespace) -> int:
    data = Path(args.bundle).read_bytes() if Path(args.bundle).is_file() else None
    if data is None:
        raise ServerError(f"{args.bundle}: publish takes the bundle's .tar archive")
    out = call(args, "POST", "/api/v1/models", raw=data)
    print(f"published {out['name']} v{out['version']} ({', '.join(out['formats'])}), sha256 {out['sha256'][:16]}...")
    for warning in out.get("warnings") or []:
        print(f"edgefleet: warning: {warning}", file=sys.stderr)
    return 0


def _emit(args: argparse.Namespace, doc: Any) -> bool:
    """``--json``: print the server's document as it came and return True; else False (the caller prints text)."""
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2, sort_keys=True))
        return True
    return False


def _seg(text: str) -> str:
    """One URL path segment: a name the server will refuse still makes a valid URL (and a one-line 4xx)."""
    return quote(str(text), safe="")


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
    if not r["targets"]:  # a row from before such rollouts were refused
        print("  reached no device: its selector matched no enrolled device")
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
        r = call(args, "POST", "/api/v1/rollouts", body)
        if not _emit(args, r):
            _print_rollout(r)
        return 0
    if args.action == "status":
        shown: Any = None
        while True:
            if args.id:
                rs = [call(args, "GET", f"/api/v1/rollouts/{args.id}")]
                doc: Any = rs[0]
            else:
                doc = call(args, "GET", "/api/v1/rollouts")
                rs = doc["rollouts"]
            if doc != shown:  # --watch polls every 0.5 s and prints only what changed
                shown = doc
                if not _emit(args, doc):
                    for r in rs:
                        _print_rollout(r)
            if not args.watch or all(r["state"] not in ("running", "paused") for r in rs):
                return 0
            time.sleep(0.5)
    if args.action == "approve":
        body = {"by": args.by} if args.by else {}
        out = call(args, "POST", f"/api/v1/models/{_seg(args.model)}/versions/{args.version}/approve", body)
        if not _emit(args, out):  # the server answers with the started rollout's status
            print(f"approved {args.model} v{args.version}")
            _print_rollout(out)
        return 0
    r = call(args, "POST", f"/api/v1/rollouts/{args.id}/{args.action}")
    if not _emit(args, r):
        _print_rollout(r)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.action == "list":
        doc = call(args, "GET", "/api/v1/models")
        if _emit(args, doc):
            return 0
        for m in doc["models"]:
            for v in m["versions"]:
                metrics = v.get("metrics") or {}
                auroc = f"auroc {metrics['auroc']:.3f}" if "auroc" in metrics else ""
                parent = ((v.get("provenance") or {}).get("parent") or {}).get("version")
                print(f"{m['name']:16} v{v['version']:<4} {','.join(v['formats']):28} {auroc:12} {'from v' + str(parent) if parent else ''}")
        return 0
    path = f"/api/v1/models/{_seg(args.name)}" + (f"/versions/{args.version}" if args.version else "")
    m = call(args, "GET", path)
    if _emit(args, m):
        return 0
    print(f"{m['name']} v{m['version']}  sha256 {m['sha256'][:16]}...  formats {', '.join(m['formats'])}  uploaded {m['uploaded_at']}")
    for p in m.get("parity", []):
        print(f"  parity {p['format']:7} {p['runtime']:22} max |dp| {float(p['max_abs_diff']):.2g}  {'PASS' if p['passed'] else 'FAIL'}")
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


def _device_line(d: dict[str, Any]) -> str:
    return f"{d['device_id']:24} {d['group']:12} v{d['active_version'] or '-':<4} {str(d['health'] or '-'):10} last seen {d['last_seen'] or 'never'}"


def cmd_devices(args: argparse.Namespace) -> int:
    if args.action == "list":
        doc = call(args, "GET", "/api/v1/devices")
        if not _emit(args, doc):
            for d in doc["devices"]:
                print(_device_line(d))
        return 0
    if args.action == "token":
        out = call(args, "POST", "/api/v1/enrollment-tokens", {"group": args.group, "tags": args.tags or []})
        if not _emit(args, out):
            print(out["token"])
        return 0
    d = call(args, "GET", f"/api/v1/devices/{_seg(args.device_id)}")
    if _emit(args, d):
        return 0
    print(_device_line(d))
    shown = {"device_id", "group", "active_version", "health", "last_seen"}
    for key in sorted(k for k in d if k not in shown):
        value = d[key]
        if value in (None, [], {}):
            continue
        print(f"  {key}: {value if isinstance(value, (str, int, float)) else json.dumps(value, sort_keys=True)}")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in (("model", args.model), ("state", args.state), ("limit", args.limit)) if v)
    doc = call(args, "GET", "/api/v1/alerts" + (f"?{query}" if query else ""))
    if _emit(args, doc):
        return 0
    if not doc["alerts"]:
        print("no alerts" + (f" for {args.model}" if args.model else "") + (f" in state {args.state}" if args.state else ""))
    for a in doc["alerts"]:
        cohort = f" cohort {a['cohort']}" if a.get("cohort") else ""
        print(f"alert {a['id']}: {a['model']} v{a['version']}{cohort} {a['state'].upper():8} {a['kind']} {a['subject']}  since {a['created_at']}"
              + (f", cleared {a['cleared_at']}" if a.get("cleared_at") else ""))
    return 0


def cmd_policies(args: argparse.Namespace) -> int:
    path = f"/api/v1/models/{_seg(args.model)}/policy"
    if args.action == "show":
        doc = call(args, "GET", path)
    else:
        body: dict[str, Any] = {}
        for item in args.settings:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ServerError(f"policies set: {item!r}: expected KEY=VALUE, e.g. drift_psi=0.25")
            try:
                body[key.strip()] = json.loads(raw)
            except json.JSONDecodeError:
                body[key.strip()] = raw  # a bare word is a string
        if not body:
            raise ServerError("policies set: give at least one KEY=VALUE")
        doc = call(args, "PUT", path, body)
    if _emit(args, doc):
        return 0
    print(f"monitoring policy of {doc['model']} ({'stored' if doc.get('stored') else 'defaults'}):")
    for key, value in sorted(doc["policy"].items()):
        print(f"  {key} = {json.dumps(value, sort_keys=True)}")
    return 0


def _read_outcomes(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rows of a CSV or JSON Lines file as outcome bodies; one line naming the column or row when one is unusable."""
    import csv
    import hashlib

    src = args.file
    try:
        fh = open(src, newline="", encoding="utf-8")
    except OSError as exc:
        raise ServerError(f"{src}: cannot read it: {exc.strerror or exc}") from None
    with fh:
        try:
            if src.endswith((".jsonl", ".ndjson")):
                rows = []
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rec = json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise ServerError(f"{src}: line {i} is not JSON: {exc.msg}") from None
                        if not isinstance(rec, dict):
                            raise ServerError(f"{src}: line {i} is not a JSON object")
                        rows.append(rec)
                columns = sorted({k for r in rows for k in r})
            else:
                reader = csv.DictReader(fh)
                rows, columns = list(reader), list(reader.fieldnames or [])
        except UnicodeDecodeError as exc:
            raise ServerError(f"{src}: not UTF-8 text (byte {exc.start})") from None
    wanted = [("--entity-column", args.entity_column), ("--label-column", args.label_column)]
    if args.observed_at_column:
        wanted.append(("--observed-at-column", args.observed_at_column))
    for option, col in wanted:
        if col not in columns:
            raise ServerError(f"{option}: {src} has no column {col!r} (columns: {', '.join(columns[:20]) or 'none'})")
    out = []
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for i, r in enumerate(rows, 1):
        entity, label = r.get(args.entity_column), r.get(args.label_column)
        if entity in (None, "") or label in (None, ""):
            raise ServerError(f"{src}: row {i}: empty {args.entity_column if entity in (None, '') else args.label_column!r}")
        observed = r.get(args.observed_at_column) if args.observed_at_column else None
        body: dict[str, Any] = {"device_id": args.source, "entity_id": str(entity), "label": label, "observed_at": observed or now}
        if args.model:
            body["model"] = args.model
        # the id comes from what the file says (not the default "now"), so a re-upload is a duplicate
        key = json.dumps([args.model, args.source, str(entity), label, observed], default=str)
        out.append({"id": hashlib.sha256(key.encode()).hexdigest()[:32], "body": body})
    return out


def cmd_outcomes(args: argparse.Namespace) -> int:
    """Delayed labels from a CSV/JSONL file, sent as ``outcome`` telemetry of the pseudo-device ``--source``.

    The server joins an outcome to the entity's latest prediction at or before ``observed_at``
    (fleet_server/monitoring/aggregate.py), whichever device made it. Message ids are derived from
    the file's content (model, source, entity, label, observed-at cell), so uploading the same file
    twice stores nothing new (the server deduplicates by id).
    """
    bodies = _read_outcomes(args)
    accepted = duplicates = 0
    created = time.time()
    for start in range(0, len(bodies), 2000):  # under the 5000-message and 4 MiB batch limits
        msgs = [{**m, "kind": "outcome", "created": created} for m in bodies[start:start + 2000]]
        out = call(args, "POST", f"/api/v1/devices/{_seg(args.source)}/telemetry", {"device_id": args.source, "messages": msgs})
        accepted, duplicates = accepted + int(out["accepted"]), duplicates + int(out["duplicates"])
    if not _emit(args, {"file": args.file, "rows": len(bodies), "accepted": accepted, "duplicates": duplicates, "source": args.source}):
        print(f"uploaded {len(bodies)} outcomes from {args.file}: {accepted} stored, {duplicates} already there (source {args.source})")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    cred = call(args, "POST", "/api/v1/devices/enroll", {"token": args.token, "device_id": args.device_id}, auth=False)
    out = Path(args.out)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(cred, fh, indent=2)
    print(f"enrolled {cred['device_id']}; credential written to {out} (keep it secret)", file=sys.stderr)
    return 0


def server_opts(p: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    """--server and --token-file default to None: edgefleet_cli.config.apply fills them (env > config file > default)."""
    p.add_argument("--server", type=cli_types.http_url, help=f"fleet server URL (default: EDGEFLEET_SERVER, the config file's server, {DEFAULT_SERVER})")
    p.add_argument("--token-file", type=cli_types.path, help="admin token file (default: EDGEFLEET_ADMIN_TOKEN, the config file's admin_token "
                                                             "or token_file, ./fleet-data/secrets/admin-token)")
    if json_output:
        p.add_argument("--json", action="store_true", help="print the server's JSON instead of text")
    p.set_defaults(fleet_settings=("server", "token_file"))


def _device_id(text: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise argparse.ArgumentTypeError(f"{text!r} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$")
    return text


def _leaf(sub: Any, name: str, func: Any, help: str, **kw: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".", **kw)
    server_opts(p)
    p.set_defaults(func=func, action=name)
    return p


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("server", help="run the fleet server (SQLite + embedded MQTT broker by default)")
    s.add_argument("--data-dir", type=cli_types.path, default="fleet-data", help="database, artifacts and secrets (default ./fleet-data in the working directory)")
    s.add_argument("--db", help="database URL, e.g. postgresql://user:pw@127.0.0.1/edgefleet (default SQLite in the data dir)")
    s.add_argument("--scores-db", help="operational database edgefleet batch-score writes, read by GET /api/v1/scores "
                                       "(URL[?table=T], default: --db, table scores)")
    s.add_argument("--mqtt", type=cli_types.mqtt_url, help="external broker mqtt://host:port, e.g. Mosquitto (default: embedded broker)")
    s.add_argument("--no-broker", action="store_true", help="no MQTT at all: devices poll over HTTP")
    s.add_argument("--mqtt-admin", metavar="USER", help="dynamic-security admin of the --mqtt Mosquitto; the server then manages device accounts and ACLs")
    s.add_argument("--mqtt-admin-password-file", type=cli_types.path, metavar="FILE", help="file holding that admin's password")
    s.add_argument("--mqtt-port", type=cli_types.port, default=1883, help="port of the embedded broker on 127.0.0.1 (default 1883)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=cli_types.port, default=8080, help="HTTP port, 0..65535 (0 picks a free one; default 8080)")
    s.add_argument("--public-url", type=cli_types.http_url, help="URL devices use to reach this server (default http://HOST:PORT)")
    s.add_argument("--trust-key", type=cli_types.path, action="append", help="publisher public key (PEM) whose bundles are accepted; repeatable")
    s.set_defaults(func=cmd_server)

    p = sub.add_parser("publish", help="upload a signed bundle .tar to the fleet server's registry")
    p.add_argument("bundle", type=cli_types.path, help="the bundle's .tar archive")
    server_opts(p, json_output=False)
    p.set_defaults(func=cmd_publish)

    r = sub.add_parser("rollout", help="start and steer staged rollouts")
    rsub = r.add_subparsers(dest="action", required=True, metavar="ACTION")
    rs = _leaf(rsub, "start", cmd_rollout, "start a staged rollout of a registered model version")
    rs.add_argument("--model", type=cli_types.model_name, help="model name")
    rs.add_argument("--version", type=cli_types.positive_int, help="version (default newest)")
    rs.add_argument("--steps", type=cli_types.percentages, default=[10.0, 50.0, 100.0], help="rising percentages ending at 100, e.g. 5,25,100")
    rs.add_argument("--groups", type=cli_types.names, help="comma-separated device groups")
    rs.add_argument("--tags", type=cli_types.names, help="comma-separated device tags")
    rs.add_argument("--max-failure-ratio", type=cli_types.number(0, 1), default=0.0, help="install/health failure ratio that halts the rollout")
    st = _leaf(rsub, "status", cmd_rollout, "show one rollout, or all")
    st.add_argument("id", nargs="?", type=cli_types.positive_int, help="rollout id (without it: all rollouts)")
    st.add_argument("--watch", action="store_true", help="refresh until it settles")
    for action, text in (("pause", "pause a running rollout"), ("resume", "resume a paused rollout"),
                         ("abort", "abort a rollout (devices keep what they run)"), ("rollback", "roll devices back to their previous version")):
        _leaf(rsub, action, cmd_rollout, text).add_argument("id", type=cli_types.positive_int, help="rollout id")
    ap = _leaf(rsub, "approve", cmd_rollout, "approve a retrained version registered with --approve-required; its rollout starts")
    ap.add_argument("model", type=cli_types.model_name, help="model name")
    ap.add_argument("version", type=cli_types.positive_int, help="the version to approve")
    ap.add_argument("--by", help="who approves (recorded in the provenance)")

    m = sub.add_parser("models", help="list registered models, or show one with its parity and provenance")
    msub = m.add_subparsers(dest="action", required=True, metavar="ACTION")
    _leaf(msub, "list", cmd_models, "list every registered model version")
    ms = _leaf(msub, "show", cmd_models, "show a model version: parity and provenance")
    ms.add_argument("name", type=cli_types.model_name, help="model name")
    ms.add_argument("--version", type=cli_types.positive_int, help="a version (default newest)")

    d = sub.add_parser("devices", help="list or show devices; create enrollment tokens")
    dsub = d.add_subparsers(dest="action", required=True, metavar="ACTION")
    _leaf(dsub, "list", cmd_devices, "list enrolled devices")
    _leaf(dsub, "show", cmd_devices, "show one device").add_argument("device_id", help="device id")
    dt = _leaf(dsub, "token", cmd_devices, "create a one-time enrollment token")
    dt.add_argument("--group", default="default", help="group of the device that enrolls with it")
    dt.add_argument("--tags", type=cli_types.names, help="comma-separated tags")

    a = sub.add_parser("alerts", help="monitoring alerts (drift, performance)")
    asub = a.add_subparsers(dest="action", required=True, metavar="ACTION")
    al = _leaf(asub, "list", cmd_alerts, "list alerts, newest first")
    al.add_argument("--model", type=cli_types.model_name, help="only this model's")
    al.add_argument("--state", choices=["firing", "cleared"], help="only firing or cleared alerts")
    al.add_argument("--limit", type=cli_types.positive_int, help="at most this many (server default 500)")

    o = sub.add_parser("outcomes", help="delayed labels (outcomes) for monitoring and retraining")
    osub = o.add_subparsers(dest="action", required=True, metavar="ACTION")
    ou = _leaf(osub, "upload", cmd_outcomes, "upload outcomes from a CSV or JSON Lines file: one row per entity and label")
    ou.add_argument("file", type=cli_types.path, help="FILE.csv or FILE.jsonl")
    ou.add_argument("--model", type=cli_types.model_name, help="model name recorded with each outcome (the join is by entity id)")
    ou.add_argument("--entity-column", default="entity_id", help="column holding the entity id the devices scored (default entity_id)")
    ou.add_argument("--label-column", default="label", help="column holding the observed label (default label)")
    ou.add_argument("--observed-at-column", help="column with ISO 8601 times the outcomes were observed (default: now)")
    ou.add_argument("--source", type=_device_id, default="labels-upload", help="device id the outcomes are stored under (default labels-upload)")

    po = sub.add_parser("policies", help="a model's monitoring policy (drift and performance thresholds)")
    posub = po.add_subparsers(dest="action", required=True, metavar="ACTION")
    _leaf(posub, "show", cmd_policies, "show a model's monitoring policy").add_argument("model", type=cli_types.model_name, help="model name")
    ps = _leaf(posub, "set", cmd_policies, "change some keys of a model's monitoring policy")
    ps.add_argument("model", type=cli_types.model_name, help="model name")
    ps.add_argument("settings", nargs="+", metavar="KEY=VALUE", help="a policy key and its JSON value, e.g. drift_psi=0.25; the server names a bad key")


def add_agent_parsers(asub: Any) -> None:
    """The device-side verbs besides ``run`` (see edgefleet_cli.main): ``enroll``."""
    e = asub.add_parser("enroll", help="exchange a one-time enrollment token for this device's credential")
    e.add_argument("--server", type=cli_types.http_url, help=f"fleet server URL (default: EDGEFLEET_SERVER, the config file's server, {DEFAULT_SERVER})")
    e.add_argument("--token", required=True, help="enrollment token from `edgefleet devices token`")
    e.add_argument("--device-id", required=True)
    e.add_argument("--out", type=cli_types.path, required=True, help="credential file to write (mode 0600)")
    e.set_defaults(func=cmd_enroll, fleet_settings=("server",))
