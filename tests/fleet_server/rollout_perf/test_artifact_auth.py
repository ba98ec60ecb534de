"""The artifact route's short path (issue 13's fan-out) keeps its guarantees: every GET checks the
device credential on that very request (nothing cached), so a device whose credential is revoked
is refused at once while the others still download; a plain GET answers exactly what send_file
did, and conditional and range requests still get 304 and 206 (real waitress + SQLite)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

from fleet_server.db import Device
from fleet_server.secrets import token_hash
from tests.fleet_server.conftest import Api, enroll


def _setup(make_server: Any, make_bundle: Callable[..., Path]) -> tuple[Api, dict[str, Any], list[dict[str, Any]]]:
    api = Api(make_server())
    code, meta, _ = api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())
    assert code == 201, meta
    return api, meta, [enroll(api, "dev-a"), enroll(api, "dev-b")]


def test_a_revoked_device_is_refused_on_its_next_artifact_get(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    api, meta, (a, b) = _setup(make_server, make_bundle)
    url = f"/api/v1/artifacts/{meta['sha256']}"
    for _ in range(3):  # warm: a cache, if there were one, would now hold dev-a
        code, body, _ = api("GET", url, token=a["token"])
        assert code == 200 and hashlib.sha256(body).hexdigest() == meta["sha256"] and len(body) == meta["size"]
    with api.server.fleet.session() as s:  # revoke dev-a's credential (rotated in the registry)
        dev = s.get(Device, "dev-a")
        assert dev is not None
        dev.token_hash = token_hash("dev_rotated-elsewhere")
    code, body, _ = api("GET", url, token=a["token"])
    assert code == 401 and "unknown device token" in body["error"], body
    code, body, _ = api("GET", url, token=b["token"])  # another device is not affected
    assert code == 200 and hashlib.sha256(body).hexdigest() == meta["sha256"]
    assert api("GET", url, token="dev_never-issued")[0] == 401
    assert api("GET", url, token=None)[0] == 401
    code, body, _ = api("POST", "/api/v1/devices/dev-a/status", {"health": "ok"}, token=b["token"])
    assert code == 403 and "dev-b" in body["error"], body  # a device's token cannot speak for another device


def test_plain_conditional_and_range_gets_answer_as_before(make_server: Any, make_bundle: Callable[..., Path]) -> None:
    api, meta, (a, _b) = _setup(make_server, make_bundle)
    sha, url = meta["sha256"], f"/api/v1/artifacts/{meta['sha256']}"
    code, whole, h = api("GET", url, token=a["token"])
    assert code == 200 and len(whole) == meta["size"] == int(h["content-length"])
    assert h["etag"] == f'"{sha}"' and h["accept-ranges"] == "bytes" and h["content-type"] == "application/x-tar"
    assert h["cache-control"] == "private, max-age=31536000, immutable" and "last-modified" in h and "expires" in h
    code, _, h304 = api("GET", url, token=a["token"], headers={"If-None-Match": f'"{sha}"'})
    assert code == 304 and h304["etag"] == f'"{sha}"'
    code, part, h206 = api("GET", url, token=a["token"], headers={"Range": "bytes=10-29"})
    assert code == 206 and part == whole[10:30] and h206["content-range"] == f"bytes 10-29/{meta['size']}"
    code, part, _ = api("GET", url, token=a["token"], headers={"Range": "bytes=0-9", "If-Range": '"not-this-one"'})
    assert code == 200 and part == whole  # If-Range mismatch: the whole body, not the range
    code, body, _ = api("GET", "/api/v1/artifacts/" + "0" * 64, token=a["token"])
    assert code == 404 and body["error"].startswith("artifact:"), body
