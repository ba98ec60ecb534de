"""The C2 protocol as the MiNiFi agents speak it: heartbeats in, operations out, acks in.

Read from the agents' own source (docs/minifi.md lists the files): the agent starts every
exchange. It POSTs a heartbeat carrying ``resourceInfo.hash`` (the digest of its asset state, or
the string ``"null"``); the server answers ``{"requestedOperations": [...]}``; the agent POSTs
one acknowledgement per operation it ran.

What an agent should hold is decided by the rollout machinery, not here: a C2 agent is a device
of kind ``minifi`` (``capabilities.kind``, set at enrolment), so rollouts target it, choose its
format and sign its assignment as for any device. Its newest assignment becomes the desired
asset set: the slim bundle of the assigned version at the stable path
``edgefleet/<model>/bundle.tar`` plus one ``edgefleet/keys/<key id>.pem`` per trusted publisher
key. The bundle's resource id names the version and sha256, because the C++ agent diffs its
``.state`` by id only (``AssetManager::sync``): a new id is what makes it download, and the
stable path is what lets a processor property point at "the current model".

* An agent that reports a hash gets ``SYNC``/``resource`` whenever the hash differs from the
  desired set's ``globalHash``; a report equal to it counts as installed (a lost ack costs nothing).
* An agent that reports no ``resourceInfo`` gets ``UPDATE``/``asset`` once per assignment; so does
  one that answered a ``SYNC`` with ``OPERATION_NOT_UNDERSTOOD``.
* Acks drive the device's reported state, which ``fleet_server.rollouts`` already reads:
  ``FULLY_APPLIED`` (and ``NO_OPERATION``: the file is there) means the assigned version runs;
  ``NOT_APPLIED``, ``PARTIALLY_APPLIED`` and ``OPERATION_NOT_UNDERSTOOD`` (of an ``UPDATE``) are an
  install refused for that version, which the rollout's failure gate counts.

Operation ids are ``ef-<serial>-<kind><index>``: the assignment serial they deliver, so an ack
needs no table of its own (and no migration) to find what it acknowledges.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any
from urllib.parse import quote

from sqlalchemy import select

from edgefleet import keys
from edgefleet.bundle_format import canonical_json
from edgefleet.errors import KeyFileError
from fleet_server.core import Fleet
from fleet_server.db import Assignment, Device, utcnow
from fleet_server.errors import FleetError, NotFound

KIND = "minifi"
FORMATS = ["onnx", "pmml"]  # what the ScoreChurn processor scores with (onnxruntime; pypmml where a JVM is present)
STATES = ["FULLY_APPLIED", "PARTIALLY_APPLIED", "OPERATION_NOT_UNDERSTOOD", "NO_OPERATION", "NOT_APPLIED"]
FAILED = {"NOT_APPLIED", "PARTIALLY_APPLIED", "OPERATION_NOT_UNDERSTOOD"}
OP_ID = re.compile(r"ef-([0-9]{1,10})-([su])([0-9]{1,3})")

_STR = {"type": "string", "maxLength": 1024}
HEARTBEAT = {
    "type": "object", "maxProperties": 64,
    "description": "a C2Heartbeat (Java) or the C++ agent's heartbeat; unknown fields are ignored",
    "properties": {
        "identifier": _STR, "created": {"type": ["integer", "number", "string"]},
        "agentInfo": {"type": "object", "properties": {"identifier": _STR, "agentClass": {**_STR, "type": ["string", "null"]},
                                                       "agentManifestHash": {**_STR, "type": ["string", "null"]}}},
        "deviceInfo": {"type": "object"},
        "flowInfo": {"type": ["object", "null"]},
        "resourceInfo": {"type": ["object", "null"], "properties": {"hash": {**_STR, "type": ["string", "null"]}}},
    },
}
ACK = {
    "type": "object", "required": ["operationId", "operationState"], "maxProperties": 64,
    "properties": {
        "operationId": {"type": "string", "minLength": 1, "maxLength": 64},
        "operationState": {"type": "object", "required": ["state"], "properties": {
            "state": {"type": "string", "enum": STATES}, "details": {"type": ["string", "null"], "maxLength": 100_000}}},
    },
}


def is_agent(dev: Device) -> bool:
    return (dev.capabilities or {}).get("kind") == KIND


def asset_signature(dev: Device, sha256: str) -> str:
    """The capability in an asset URL: the Java agent sends no credential on downloads
    (``C2HttpClient.retrieveUpdateContent``), so the URL carries one. Keyed by the device's
    stored token hash: re-enrolling the device invalidates every URL it was given."""
    return hmac.new(dev.token_hash.encode(), f"asset:{dev.device_id}:{sha256}".encode(), hashlib.sha256).hexdigest()[:32]


def check_asset_signature(dev: Device, sha256: str, sig: str) -> bool:
    return hmac.compare_digest(asset_signature(dev, sha256).encode(), sig.encode("utf-8", "surrogateescape"))


def _asset_url(fleet: Fleet, dev: Device, sha: str) -> str:
    base = fleet.cfg.public_url.rstrip("/")  # absolute: Java's legacy URL provider refuses relative C2 URLs
    return f"{base}/c2-protocol/assets/{sha}?agent={quote(dev.device_id)}&sig={asset_signature(dev, sha)}"


def publisher_keys(fleet: Fleet) -> list[tuple[str, bytes]]:
    """(key id, PEM bytes) of every trusted publisher key: what the processor verifies bundles with."""
    out = []
    for p in sorted(fleet.trusted_dir.glob("*.pem")):
        pem = p.read_bytes()
        try:
            out.append((keys.key_id(keys.public_key_from_pem(pem, p.name)), pem))
        except KeyFileError:
            continue
    return out


def desired(fleet: Fleet, dev: Device, assignment: dict[str, Any]) -> dict[str, Any]:
    """The asset set of one assignment: ``{"globalHash": {...}, "resourceList": [...]}``, all values strings."""
    a = assignment["assignment"]
    sha = str(a["bundle_sha256"])
    items = [{"resourceId": f"{a['model']}-v{a['version']}-{sha[:12]}", "resourceName": "bundle.tar",
              "resourceType": "ASSET", "resourcePath": f"edgefleet/{a['model']}", "digest": sha, "hashType": "SHA256",
              "url": _asset_url(fleet, dev, sha)}]
    for kid, pem in publisher_keys(fleet):
        ksha = hashlib.sha256(pem).hexdigest()
        items.append({"resourceId": f"key-{kid}", "resourceName": f"{kid}.pem", "resourceType": "ASSET",
                      "resourcePath": "edgefleet/keys", "digest": ksha, "hashType": "SHA256", "url": _asset_url(fleet, dev, ksha)})
    digest = hashlib.sha256(canonical_json([[i["resourceId"], i["digest"]] for i in items])).hexdigest()
    return {"globalHash": {"digest": digest, "hashType": "SHA256"}, "resourceList": items}


def _newest(s: Any, device_id: str) -> Assignment | None:
    row: Assignment | None = s.scalars(select(Assignment).where(Assignment.device_id == device_id).order_by(Assignment.serial.desc()).limit(1)).first()
    return row


def _c2_state(dev: Device) -> dict[str, Any]:
    return dict((dev.status or {}).get("c2") or {})


def _set_c2_state(dev: Device, c2: dict[str, Any]) -> None:
    dev.status = {**(dev.status or {}), "c2": c2}


def _installed(dev: Device, row: Assignment) -> None:
    if dev.active_version != row.version:
        dev.status = {**(dev.status or {}), "previous_version": dev.active_version}
    dev.active_model, dev.active_version, dev.health = row.model, row.version, "ok"
    dev.last_install = {"version": row.version, "result": "installed", "via": "c2"}


def heartbeat(fleet: Fleet, device_id: str, hb: dict[str, Any]) -> dict[str, Any]:
    """Record the heartbeat (last-seen, reported hash) and answer with the operations to run."""
    agent = hb.get("agentInfo") or {}
    resource = hb.get("resourceInfo")
    reported = resource.get("hash") if isinstance(resource, dict) else None
    with fleet.session() as s:
        dev = s.get(Device, device_id)
        if dev is None:
            raise NotFound(f"device: {device_id} is not enrolled")
        dev.last_seen = utcnow()
        c2 = _c2_state(dev)
        c2.update({"agent_identifier": agent.get("identifier") or hb.get("identifier"), "agent_class": agent.get("agentClass"),
                   "hash": reported, "heartbeat_at": utcnow().isoformat() + "Z"})
        row = _newest(s, device_id)
        ops: list[dict[str, Any]] = []
        if row is not None:
            want = desired(fleet, dev, row.envelope)
            if reported is not None and not c2.get("sync_unsupported"):  # the agent keeps asset state: declarative SYNC
                if reported == want["globalHash"]["digest"]:
                    if c2.get("acked_serial") != row.serial or dev.active_version != row.version:
                        _installed(dev, row)  # its own report proves it holds the set (the ack may have been lost)
                        c2["acked_serial"] = row.serial
                else:
                    ops.append({"identifier": f"ef-{row.serial}-s0", "operation": "SYNC", "operand": "resource", "args": want})
            elif c2.get("acked_serial") != row.serial:  # no asset state reported: one UPDATE per file, once per assignment
                for i, item in enumerate(want["resourceList"]):
                    ops.append({"identifier": f"ef-{row.serial}-u{i}", "operation": "UPDATE", "operand": "asset",
                                "args": {"file": f"{item['resourcePath']}/{item['resourceName']}", "url": item["url"],
                                         "forceDownload": "true" if i == 0 else "false"}})
        _set_c2_state(dev, c2)
    return {"requestedOperations": ops}


def acknowledge(fleet: Fleet, device_id: str, ack: dict[str, Any]) -> dict[str, Any]:
    """Apply one acknowledgement to the device's reported state; the rollout reconciler reads it."""
    op_id = ack["operationId"]
    m = OP_ID.fullmatch(op_id)
    if m is None:
        raise FleetError(f"operationId: {op_id[:64]!r} is not an operation this server issued (ef-<serial>-<s|u><n>)")
    serial, kind, index = int(m.group(1)), m.group(2), int(m.group(3))
    state = ack["operationState"]["state"]
    details = str(ack["operationState"].get("details") or "")
    with fleet.session() as s:
        dev = s.get(Device, device_id)
        if dev is None:
            raise NotFound(f"device: {device_id} is not enrolled")
        dev.last_seen = utcnow()
        row = s.scalars(select(Assignment).where(Assignment.device_id == device_id, Assignment.serial == serial)).first()
        if row is None:
            raise NotFound(f"operationId: {op_id} names assignment {serial}, which {device_id} was never given")
        newest = _newest(s, device_id)
        c2 = _c2_state(dev)
        c2["last_ack"] = {"operationId": op_id, "state": state, "details": details[:300], "at": utcnow().isoformat() + "Z"}
        current = newest is not None and newest.serial == serial
        if current and kind == "s" and state == "OPERATION_NOT_UNDERSTOOD":
            c2["sync_unsupported"] = True  # an agent that reports a hash but cannot SYNC: UPDATE/asset from the next heartbeat
        elif current:
            if state in FAILED:
                dev.last_install = {"version": row.version, "result": f"refused: C2 {state}: {details[:400]}", "via": "c2"}
                c2["acked_serial"] = serial
            elif kind == "s" or index == 0:  # the bundle itself (an UPDATE for a key file does not install a version)
                _installed(dev, row)
                c2["acked_serial"] = serial
        _set_c2_state(dev, c2)
    return {"operationId": op_id, "state": state, "applied": current}
