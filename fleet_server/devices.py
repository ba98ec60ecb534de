"""Devices: one-time enrollment, reported state, and signed assignments (desired state).

An assignment is the only thing that tells a device what to run. It is signed with the
server's key (devices trust it from enrollment), carries a per-device increasing ``serial``
(devices ignore replays), names the slim bundle for the one format the device reported it can
run, and is published retained on the device's MQTT topic as well as served over HTTP.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from edgefleet import keys
from edgefleet.bundle_format import canonical_json
from fleet_server.core import Fleet
from fleet_server.db import Assignment, Device, EnrollmentToken, ModelVersion, utcnow
from fleet_server.errors import Conflict, FleetError, NotFound, Unauthorized
from fleet_server.secrets import token_hash
from fleet_server.validation import DEVICE_ID, ENROLL_REQUEST, ENROLLMENT_TOKEN_REQUEST, STATUS, check, clean

# pickle and spark last: chosen only for a device that declared it runs them (a pickle runs code
# when loaded; a Spark model needs a JVM), and only when it declares none of the formats above.
FORMAT_PREFERENCE = ("onnx", "tflite", "tfjs", "pmml", "coreml", "pickle", "spark")


def create_enrollment_token(fleet: Fleet, group: str = "default", tags: list[str] | None = None, ttl: float | None = None) -> str:
    req = check({"group": group, "tags": list(tags or []), **({"ttl_seconds": ttl} if ttl is not None else {})}, ENROLLMENT_TOKEN_REQUEST, "")
    token = "enr_" + secrets.token_urlsafe(24)
    with fleet.session() as s:
        s.add(EnrollmentToken(token_hash=token_hash(token), group=req["group"], tags=req["tags"],
                              expires_at=utcnow() + dt.timedelta(seconds=ttl or fleet.cfg.enrollment_ttl_seconds)))
    return token


RESERVED_IDS = {"edgefleet", "admin"}


KINDS = ("agent", "minifi")


def enroll(fleet: Fleet, token: str, device_id: str, kind: str | None = None) -> dict[str, Any]:
    """Exchange a one-time token for a device credential.

    ``kind`` is ``agent`` (the edgefleet device agent, the default) or ``minifi`` (a MiNiFi/NiFi
    C2 agent, fleet_server.c2). It is kept in the device's ``capabilities`` JSON (``kind``, with
    the formats the ScoreChurn processor scores), so no column is added and a rollout can assign
    the agent before it ever reports: a C2 agent never posts an edgefleet status.

    The token is consumed by one conditional UPDATE (``... WHERE used_by IS NULL``) whose row
    count says who won: on PostgreSQL the row lock makes a concurrent UPDATE wait and re-check
    the condition, on SQLite the write lock serialises them, so of N parallel enrollments with
    one token exactly one succeeds, whatever the isolation level.
    """
    check({"token": token, "device_id": device_id}, ENROLL_REQUEST, "")
    if kind is not None and kind not in KINDS:
        raise FleetError(f"kind: {str(kind)[:32]!r} is not one of {list(KINDS)}")
    if device_id.lower() in RESERVED_IDS or device_id.lower().startswith("edgefleet-"):
        # the server's and the broker admin's MQTT accounts: a device account of that name could never log in
        raise FleetError(f"device_id: {device_id!r} is reserved for the server's own broker accounts")
    h = token_hash(token)
    try:
        with fleet.session() as s:
            claimed = s.execute(update(EnrollmentToken).where(EnrollmentToken.token_hash == h, EnrollmentToken.used_by.is_(None),
                                                              EnrollmentToken.expires_at >= utcnow())
                                .values(used_by=device_id).execution_options(synchronize_session=False))
            if getattr(claimed, "rowcount", 0) != 1:  # an UPDATE's CursorResult
                row = s.get(EnrollmentToken, h)
                if row is None:
                    raise Unauthorized("token: unknown enrollment token")
                if row.used_by is not None:
                    raise Conflict(f"token: already used by device {row.used_by}; enrollment tokens are one-time")
                raise Unauthorized("token: enrollment token expired")
            row = s.get(EnrollmentToken, h)
            if row is None:  # claimed a moment ago in this transaction
                raise Unauthorized("token: unknown enrollment token")
            if s.get(Device, device_id) is not None:
                raise Conflict(f"device_id: {device_id} is already enrolled")
            credential = "dev_" + secrets.token_urlsafe(32)
            caps = {"kind": "minifi", "formats": ["onnx", "pmml"]} if kind == "minifi" else {}
            s.add(Device(device_id=device_id, token_hash=token_hash(credential), group=row.group, tags=list(row.tags), capabilities=caps))
            s.flush()
            if fleet.broker_access is not None:
                # Broker first, inside the transaction: if the broker refuses, the enrollment rolls
                # back and the one-time token stays usable.
                try:
                    fleet.broker_access.add_device(device_id, credential)
                except Exception as exc:  # noqa: BLE001 - dynsec, socket and timeout errors alike
                    raise FleetError(f"broker: could not create the device's MQTT account ({exc}); enrollment not done, retry") from exc
    except IntegrityError:  # the same device id enrolled concurrently with another token
        raise Conflict(f"device_id: {device_id} is already enrolled") from None
    pems = fleet.device_trust_pems()  # the server's assignment key first, then the publisher keys
    return {
        "device_id": device_id, "token": credential, "server": fleet.cfg.public_url,
        "mqtt": fleet.mqtt_url_for_devices,
        # the roles apart: a device takes assignments only from the first, bundles only from the
        # second. No merged legacy list: a device given one would trust the server key for bundles.
        "assignment_keys": pems[:1], "publisher_keys": [p for p in pems[1:] if p != pems[0]],
    }


def authenticate(fleet: Fleet, token: str | None) -> Device:
    if not token:
        raise Unauthorized("authorization: send 'Authorization: Bearer <device token>'")
    with fleet.session() as s:
        dev = s.scalars(select(Device).where(Device.token_hash == token_hash(token))).first()
    if dev is None:
        raise Unauthorized("authorization: unknown device token")
    return dev


_DEVICE_BY_TOKEN = select(Device.device_id).where(Device.token_hash == bindparam("h"))


def authenticate_id(fleet: Fleet, token: str | None) -> str:
    """The id of the device whose credential ``token`` is, from one indexed lookup of the id alone.

    Every device request (an artifact GET above all: 10,000 of them per rollout) pays only this
    one-column query, not an ORM load of the device row with its JSON columns. Nothing is cached:
    a device whose row is gone or whose credential changed is refused on its very next request,
    from any server process.
    """
    if not token:
        raise Unauthorized("authorization: send 'Authorization: Bearer <device token>'")
    with fleet.engine.connect() as conn:
        device_id = conn.execute(_DEVICE_BY_TOKEN, {"h": token_hash(token)}).scalar()
    if device_id is None:
        raise Unauthorized("authorization: unknown device token")
    return str(device_id)


def choose_format(capabilities: dict[str, Any], formats: list[str]) -> tuple[str | None, str]:
    runs = list(capabilities.get("formats") or capabilities.get("backends") or [])
    if not runs:
        return None, "the device has not reported its capabilities yet"
    for fmt in FORMAT_PREFERENCE:
        if fmt in runs and fmt in formats:
            return fmt, ""
    return None, f"device runs {runs}, the bundle offers {formats}"


def record_status(fleet: Fleet, device_id: str, status: dict[str, Any], session: Any = None) -> None:
    """Store a device's reported state. Every field is checked against ``validation.STATUS``
    first (types, ranges, lengths), so a bad status, over HTTP or MQTT, is a ``FleetError``
    naming the field and never reaches the database."""
    if not isinstance(status, dict):
        raise FleetError("status: expected a JSON object")
    check(device_id, DEVICE_ID, "device_id")
    check(clean(status, "status"), STATUS, "status")
    if session is None:
        with fleet.session() as s:
            return record_status(fleet, device_id, status, s)
    s = session
    dev = s.get(Device, device_id)
    if dev is None:
        raise NotFound(f"device: {device_id} is not enrolled")
    dev.last_seen = utcnow()
    caps = status.get("capabilities")
    if isinstance(caps, dict):
        dev.capabilities = caps
    if "active_version" in status:
        dev.active_version = status.get("active_version")
        dev.active_model = status.get("active_model")
    dev.health = status.get("health")
    dev.last_install = status.get("last_install")
    dev.status = {k: status.get(k) for k in ("outbox", "transport", "agent_version", "previous_version", "ts", "fallback", "store")}


def preload(session: Any, device_ids: list[str]) -> list[Device]:
    """Load these devices into ``session`` in one SELECT, so ``record_status`` for each of them
    reads the identity map instead of sending a query per status. Keep the returned list while
    the session is used: the identity map holds unmodified objects only weakly."""
    ids = sorted(set(device_ids))
    if not ids:
        return []
    return list(session.scalars(select(Device).where(Device.device_id.in_(ids))))


def issue_assignment(fleet: Fleet, device_id: str, model: ModelVersion, fmt: str, *, rollback: bool = False,
                     rollout_id: int | None = None, session: Any = None, last_serial: int | None = None) -> dict[str, Any]:
    """Sign, store and (after the transaction commits) publish a device's new desired state.

    ``last_serial`` saves a query per device when the caller fetched all serials at once.
    """
    if session is None:
        with fleet.session() as s:
            return issue_assignment(fleet, device_id, model, fmt, rollback=rollback, rollout_id=rollout_id, session=s)
    serials = None if last_serial is None else {device_id: last_serial}
    return issue_assignments(fleet, session, model, [(device_id, fmt)], rollback=rollback, rollout_id=rollout_id, serials=serials)[0]


def issue_assignments(fleet: Fleet, s: Any, model: ModelVersion, items: list[tuple[str, str]], *, rollback: bool = False,
                      rollout_id: int | None = None, serials: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """``issue_assignment`` for many ``(device_id, format)`` at once, in session ``s``: each signed
    with its own serial (one past ``serials[device_id]``, or past the stored maximum, fetched for
    all of them in one query when ``serials`` is None), stored by one multi-row INSERT, published
    once the transaction commits.

    A Core INSERT, not ORM objects: the ORM inserted each Assignment by itself to read its id
    back (SQLite RETURNING, one statement per row) and kept it in the identity map, about a third
    of the reconciler's CPU when it assigned 1,000 devices (cProfile, bench/rollout.py). The row is
    in the database when this returns, so a later ``max(serial)`` in the same transaction (a
    rollback issued in the same pass) sees it.
    """
    if not items:
        return []
    if serials is None:
        serials = last_serials(s, sorted({d for d, _ in items}))
    next_serial = dict(serials)
    issued_at = utcnow()
    stamp = issued_at.replace(microsecond=0).isoformat() + "Z"
    rows: list[dict[str, Any]] = []
    envelopes = []
    publish = s.info.setdefault("publish", [])
    key, key_id = fleet.secrets.signing_key, fleet.secrets.signing_key_id
    for device_id, fmt in items:
        variant = model.variants.get(fmt) or model.variants["full"]
        serial = next_serial.get(device_id, 0) + 1
        next_serial[device_id] = serial
        body = {
            "device_id": device_id, "serial": serial, "model": model.name, "version": model.version,
            "bundle_sha256": variant["sha256"], "size": variant["size"], "url": f"/api/v1/artifacts/{variant['sha256']}",
            "format": fmt, "rollback": rollback, "issued_at": stamp,
            "rollout_id": rollout_id,  # so the device can say which rollout an install or rollback belongs to
        }
        sig = keys.sign(key, canonical_json(body))
        envelope = {"assignment": body, "key_id": key_id, "signature": base64.b64encode(sig).decode()}
        rows.append({"device_id": device_id, "serial": serial, "model": model.name, "version": model.version, "format": fmt,
                     "rollback": rollback, "rollout_id": rollout_id, "envelope": envelope, "issued_at": issued_at})
        publish.append((f"edgefleet/v1/devices/{device_id}/assignment", json.dumps(envelope).encode()))
        envelopes.append(envelope)
    s.execute(insert(Assignment), rows)
    return envelopes


def last_serials(session: Any, device_ids: list[str]) -> dict[str, int]:
    """Each device's highest assignment serial (absent: none yet), in IN lists of at most 500 ids."""
    out: dict[str, int] = {}
    for i in range(0, len(device_ids), 500):
        rows = session.execute(select(Assignment.device_id, func.max(Assignment.serial))
                               .where(Assignment.device_id.in_(device_ids[i:i + 500])).group_by(Assignment.device_id))
        out.update({d: int(m) for d, m in rows})
    return out


def current_assignment(fleet: Fleet, device_id: str) -> dict[str, Any] | None:
    with fleet.session() as s:
        row = s.scalars(select(Assignment).where(Assignment.device_id == device_id).order_by(Assignment.serial.desc()).limit(1)).first()
    return row.envelope if row else None


def republish_all(fleet: Fleet) -> int:
    """Re-send every device's newest assignment as retained (an embedded broker forgets them)."""
    with fleet.session() as s:
        newest = select(Assignment.device_id, func.max(Assignment.serial).label("serial")).group_by(Assignment.device_id).subquery()
        rows = s.scalars(select(Assignment).join(newest, (Assignment.device_id == newest.c.device_id) & (Assignment.serial == newest.c.serial))).all()
    for row in rows:
        fleet.publish(f"edgefleet/v1/devices/{row.device_id}/assignment", json.dumps(row.envelope).encode(), True)
    return len(rows)


def describe(dev: Device) -> dict[str, Any]:
    return {
        "device_id": dev.device_id, "group": dev.group, "tags": dev.tags,
        "enrolled_at": dev.enrolled_at.isoformat() + "Z", "last_seen": dev.last_seen.isoformat() + "Z" if dev.last_seen else None,
        "active_model": dev.active_model, "active_version": dev.active_version, "health": dev.health,
        "capabilities": dev.capabilities, "last_install": dev.last_install, "status": dev.status,
    }
