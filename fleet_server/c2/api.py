"""C2 routes: heartbeat, acknowledge and asset download for MiNiFi agents (C++ and Java).

An agent is a device of kind ``minifi``; its credential is the device token. What each agent
can send, from its source:

* MiNiFi C++ sends no Authorization header of its own (``RESTSender``), but its HTTP client is
  libcurl, which turns the user-info of a URL into HTTP Basic: ``nifi.c2.rest.path.base=
  http://<device_id>:<token>@host:8080/c2-protocol`` authenticates every C2 call.
* The Java agent (``C2HttpClient`` on OkHttp) sends no credential at all beyond a TLS client
  certificate, and OkHttp ignores URL user-info; it puts the token in the path instead:
  ``c2.rest.path.base=http://host:8080/c2-protocol/agent/<token>``.
* A proxy or a custom client may send ``Authorization: Bearer <token>``.

Asset URLs carry their own capability (``?agent=&sig=``, see ``protocol.asset_signature``)
because neither agent authenticates a download; a stored asset is hashed before it is served
and refused (409) if its bytes no longer match its sha256, so a file tampered with at rest
reaches no agent: the agent's fetch fails and it acks ``NOT_APPLIED``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file

from fleet_server import model_versions as registry
from fleet_server.api.auth import bearer, fleet
from fleet_server.api.body import json_body
from fleet_server.c2 import protocol
from fleet_server.db import Device
from fleet_server.devices import authenticate
from fleet_server.errors import Conflict, Forbidden, NotFound, Unauthorized

bp = Blueprint("c2", __name__, url_prefix="/c2-protocol")

SHA_CHARS = set("0123456789abcdef")


def _basic() -> tuple[str, str] | None:
    h = request.headers.get("Authorization", "")
    if not h.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(h[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthorized("authorization: the Basic credentials are not base64 of '<device_id>:<token>'") from None
    return user, password


def _agent(path_token: str | None = None) -> Device:
    """The calling agent, from its path token, Basic password or bearer token."""
    basic = _basic()
    token = path_token or (basic[1] if basic else None) or bearer()
    if not token:
        raise Unauthorized("authorization: send the device token as Basic '<device_id>:<token>' (URL user-info), "
                           "'Bearer <token>', or in the path /c2-protocol/agent/<token>/...")
    dev = authenticate(fleet(), token)
    if basic and basic[0] and basic[0] != dev.device_id:
        raise Unauthorized(f"authorization: the Basic user {basic[0][:64]!r} is not the device this token belongs to")
    if not protocol.is_agent(dev):
        raise Forbidden(f"device: {dev.device_id} is not enrolled as kind 'minifi'; enroll the agent with \"kind\": \"minifi\"")
    return dev


def _heartbeat(path_token: str | None) -> Any:
    dev = _agent(path_token)
    return jsonify(protocol.heartbeat(fleet(), dev.device_id, json_body(protocol.HEARTBEAT)))


def _acknowledge(path_token: str | None) -> Any:
    dev = _agent(path_token)
    return jsonify(protocol.acknowledge(fleet(), dev.device_id, json_body(protocol.ACK)))


@bp.post("/heartbeat")
def heartbeat() -> Any:
    return _heartbeat(None)


@bp.post("/acknowledge")
def acknowledge() -> Any:
    return _acknowledge(None)


@bp.post("/agent/<token>/heartbeat")
def heartbeat_with_path_token(token: str) -> Any:
    return _heartbeat(token)


@bp.post("/agent/<token>/acknowledge")
def acknowledge_with_path_token(token: str) -> Any:
    return _acknowledge(token)


def _stored(sha256: str) -> Path:
    """The stored file whose content is ``sha256``: a bundle archive or a trusted publisher key."""
    if len(sha256) != 64 or not set(sha256) <= SHA_CHARS:
        raise NotFound("asset: not a sha256")
    try:
        return registry.artifact_path(fleet(), sha256)
    except NotFound:
        for p in sorted(fleet().trusted_dir.glob("*.pem")):
            if hashlib.sha256(p.read_bytes()).hexdigest() == sha256:
                return p
        raise


@bp.get("/assets/<sha256>")
def asset(sha256: str) -> Any:
    agent, sig = request.args.get("agent"), request.args.get("sig")
    if agent is not None or sig is not None:
        with fleet().session() as s:
            dev = s.get(Device, agent or "")
        if dev is None or not sig or not protocol.check_asset_signature(dev, sha256, sig):
            raise Unauthorized("sig: not a valid asset link for this agent (links change when the agent re-enrolls)")
    else:
        _agent()
    path = _stored(sha256)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise Conflict(f"asset: the stored bytes of {sha256[:12]} no longer match their sha256 (changed at rest); not served")
    resp: Response = send_file(path, mimetype="application/octet-stream", conditional=True, etag=sha256, max_age=31536000)
    return resp
