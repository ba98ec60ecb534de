"""Python re-enactments of the two MiNiFi C2 clients, for tests: neither agent can be installed here.

``CppAgent`` follows apache/nifi-minifi-cpp (libminifi/src/c2/C2Agent.cpp ``handle_sync`` and
``handleAssetUpdate``, libminifi/src/utils/file/AssetManager.cpp ``refreshState``/``sync``/
``persist``, libminifi/src/c2/HeartbeatJsonSerializer.cpp for the ack): the asset folder holds ``.state``
(``{"digest": ..., "assets": {id: {path, url}}}``); a sync diffs the server's list against it
*by id*, fetches each new item to ``<file>.part``, deletes the items no longer listed, then
renames every ``.part`` into place; any error clears the digest and the ack is ``NOT_APPLIED``
(C++ ``SET_ERROR``) with the error text as ``details``. It reports the digest, or the string
``"null"``, as ``resourceInfo.hash``. libcurl sends the URL's user-info as HTTP Basic, which is
how the C++ agent authenticates; the re-enactment does the same.

``JavaHeartbeat`` builds the Java agent's ``C2Heartbeat``/``C2OperationAck`` JSON (apache/nifi
c2-protocol-api) and ``check_for_both_parsers`` applies the rules of both response parsers.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

UPPER_OPERATIONS = {"ACKNOWLEDGE", "CLEAR", "DESCRIBE", "HEARTBEAT", "UPDATE", "RESTART", "START", "STOP", "PAUSE", "REPLICATE",
                    "SUBSCRIBE", "TRANSFER", "SYNC", "RESUME", "SLEEP"}
RESOURCE_KEYS = ("resourceId", "resourceName", "resourceType", "resourcePath", "digest", "hashType", "url")


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request, libcurl-style: user-info in the URL becomes HTTP Basic."""
    parts = urlsplit(url)
    hdrs = dict(headers or {})
    if parts.username is not None:
        cred = f"{parts.username}:{parts.password or ''}".encode()
        hdrs["Authorization"] = "Basic " + base64.b64encode(cred).decode()
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(urlunsplit(parts), data=data, method=method, headers={"Content-Type": "application/json", **hdrs})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if "json" in r.headers.get("Content-Type", "") else raw)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw


def validate_relative_file_path(p: str) -> str | None:
    """C++ utils::file::validateRelativeFilePath: relative, no '..' component; the error text, or None."""
    pp = PurePosixPath(p)
    if pp.is_absolute() or p.startswith("\\"):
        return f"Path '{p}' is not relative"
    if ".." in pp.parts:
        return f"Path '{p}' contains '..'"
    return None


class CppAgent:
    """MiNiFi C++'s C2 loop over HTTP, one heartbeat per ``beat()``."""

    def __init__(self, rest_base: str, asset_dir: Path, identifier: str, *, report_hash: bool = True) -> None:
        self.base = rest_base.rstrip("/")  # nifi.c2.rest.path.base; nifi.c2.rest.url=/heartbeat, .url.ack=/acknowledge
        self.root = asset_dir
        self.identifier = identifier
        self.report_hash = report_hash
        self.acks: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {"digest": "", "assets": {}}
        self.refresh_state()

    # --- AssetManager ---------------------------------------------------------------------
    def refresh_state(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        sf = self.root / ".state"
        if not sf.exists():
            sf.write_text('{"digest": "", "assets": {}}')
        doc = json.loads(sf.read_text())
        assets = {i: e for i, e in doc["assets"].items() if (self.root / e["path"]).exists()}
        self.state = {"digest": doc["digest"], "assets": assets}

    def hash(self) -> str:
        return self.state["digest"] or "null"

    def persist(self) -> None:
        (self.root / ".state").write_text(json.dumps(self.state, separators=(",", ":")))

    def sync(self, digest: str, layout: dict[str, dict[str, str]]) -> str | None:
        new_state: dict[str, Any] = {"digest": self.state["digest"], "assets": {}}
        errors = ""
        new_ids = []
        for aid, entry in layout.items():
            if aid not in self.state["assets"]:
                err = self.fetch(entry["url"], self.root / (entry["path"] + ".part"))
                if err is None:
                    new_ids.append(aid)
                    new_state["assets"][aid] = entry
                else:
                    errors += f"Failed to fetch '{aid}' from '{entry['url']}': {err}\n"
            else:
                new_state["assets"][aid] = entry
        for aid, old in self.state["assets"].items():
            if aid not in layout:
                try:
                    (self.root / old["path"]).unlink()
                except OSError:
                    pass
        for aid in new_ids:
            full = self.root / layout[aid]["path"]
            try:
                os.rename(str(full) + ".part", full)
            except OSError:
                errors += f"Failed to move temporary asset file '{full}.part' to '{full}'\n"
                del new_state["assets"][aid]
        new_state["digest"] = digest if not errors else ""
        self.state = new_state
        self.persist()
        return errors or None

    def fetch(self, url: str, dest: Path) -> str | None:
        resolved = url if not url.startswith("/") else self.base + url  # resolveUrl with nifi.c2.rest.path.base
        code, body = http("GET", resolved)
        if code >= 400:
            return f"Failed to fetch file from {resolved}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
        return None

    def find_asset_by_id(self, aid: str) -> Path | None:
        entry = self.state["assets"].get(aid)
        return self.root / entry["path"] if entry else None

    # --- C2Agent ---------------------------------------------------------------------------
    def heartbeat_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "operation": "heartbeat",
            "agentInfo": {"identifier": self.identifier, "agentClass": "edge", "agentManifestHash": "0" * 128,
                          "status": {"uptime": 1000, "repositories": {}}},
            "deviceInfo": {"identifier": "host-1", "systemInfo": {"machineArch": "x86_64", "operatingSystem": "Linux"},
                           "networkInfo": {"hostname": "h", "ipAddress": "127.0.0.1"}},
            "flowInfo": {"flowId": "f1", "versionedFlowSnapshotURI": {}, "components": {}, "queues": {}},
        }
        if self.report_hash:
            body["resourceInfo"] = {"hash": self.hash()}
        return body

    def beat(self) -> dict[str, Any]:
        code, resp = http("POST", self.base + "/heartbeat", self.heartbeat_body())
        if code != 200:
            raise AssertionError(f"heartbeat answered {code}: {resp}")
        ops = resp.get("requestedOperations", resp.get("requested_operations", []))
        for op in ops:
            ident = op.get("identifier", op.get("operationid", op.get("operationId")))
            args = op.get("args", op.get("content", {}))
            operation, operand = str(op["operation"]).lower(), str(op.get("operand", "")).lower()
            if operation == "sync" and operand == "resource":
                self.handle_sync(ident, args)
            elif operation == "update" and operand == "asset":
                self.handle_asset_update(ident, args)
            else:
                self.ack(ident, "OPERATION_NOT_UNDERSTOOD", f"{operation}/{operand}")
        return resp

    def ack(self, ident: str, state: str, details: str = "") -> tuple[int, Any]:
        # HeartbeatJsonSerializer::serializeOperationInfo: "identifier" repeats the operation id
        body = {"operation": "acknowledge", "operationId": ident, "operationState": {"state": state, "details": details},
                "identifier": ident}
        self.acks.append(body)
        return http("POST", self.base + "/acknowledge", body)

    def handle_sync(self, ident: str, args: dict[str, Any]) -> None:
        gh = args.get("globalHash")
        if not isinstance(gh, dict) or not isinstance(gh.get("digest"), str):
            self.ack(ident, "NOT_APPLIED", "Malformed request, 'globalHash' has no member 'digest'")
            return
        rl = args.get("resourceList")
        if not isinstance(rl, list):
            self.ack(ident, "NOT_APPLIED", "Malformed request, 'resourceList' is not an array")
            return
        layout: dict[str, dict[str, str]] = {}
        for i, res in enumerate(rl):
            for key in ("resourceId", "resourceName", "resourceType"):
                if not isinstance(res.get(key), str):
                    self.ack(ident, "NOT_APPLIED", f"Malformed request, 'resourceList[{i}]' has no member '{key}'")
                    return
            if res["resourceType"] != "ASSET":
                continue
            for key in ("resourcePath", "url"):
                if not isinstance(res.get(key), str):
                    self.ack(ident, "NOT_APPLIED", f"Malformed request, 'resourceList[{i}]' has no member '{key}'")
                    return
            full = str(PurePosixPath(res["resourcePath"]) / res["resourceName"])
            err = validate_relative_file_path(full)
            if err:
                self.ack(ident, "NOT_APPLIED", err)
                return
            layout[res["resourceId"]] = {"path": full, "url": res["url"]}
        errors = self.sync(gh["digest"], layout)
        self.ack(ident, "NOT_APPLIED" if errors else "FULLY_APPLIED", errors or "")

    def handle_asset_update(self, ident: str, args: dict[str, Any]) -> None:
        file_rel, url = args.get("file"), args.get("url")
        if not isinstance(file_rel, str):
            self.ack(ident, "NOT_APPLIED", "Couldn't find 'file' argument")
            return
        err = validate_relative_file_path(file_rel)
        if err:
            self.ack(ident, "NOT_APPLIED", err)
            return
        if not isinstance(url, str):
            self.ack(ident, "NOT_APPLIED", "Couldn't find 'url' argument")
            return
        force = str(args.get("forceDownload", "false")).lower()
        if force not in ("true", "false"):
            self.ack(ident, "NOT_APPLIED", "Argument 'forceDownload' must be either 'true' or 'false'")
            return
        path = self.root / file_rel
        if force == "false" and path.exists():
            self.ack(ident, "NO_OPERATION", "File already exists")
            return
        resolved = url if not url.startswith("/") else self.base + url
        code, body = http("GET", resolved)
        if code >= 400:
            self.ack(ident, "NOT_APPLIED", f"Failed to fetch asset from '{resolved}'")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        self.ack(ident, "FULLY_APPLIED")


def java_heartbeat(identifier: str, resource_hash: str | None) -> dict[str, Any]:
    """A C2Heartbeat as the Java agent serialises it (c2-protocol-api C2Heartbeat and its parts)."""
    hb: dict[str, Any] = {
        "identifier": identifier, "created": int(time.time() * 1000),
        "deviceInfo": {"identifier": "dev-hw-1", "systemInfo": {"machineArch": "amd64", "operatingSystem": "Linux", "vCores": 2},
                       "networkInfo": {"deviceId": "x", "hostname": "h", "ipAddress": "127.0.0.1"}},
        "agentInfo": {"identifier": identifier, "agentClass": "default", "agentManifestHash": "abc",
                      "status": {"uptime": 5, "repositories": {}, "componentStatus": {}}},
        "flowInfo": {"flowId": "f", "flowUpdateUrl": None, "components": {}, "queues": {}, "processorBulletins": [], "processorStatuses": []},
    }
    if resource_hash is not None:
        hb["resourceInfo"] = {"hash": resource_hash}
    return hb


def java_ack(operation_id: str, state: str, details: str = "") -> dict[str, Any]:
    return {"operationId": operation_id, "operationState": {"state": state, "details": details},
            "deviceInfo": {"identifier": "dev-hw-1"}, "agentInfo": {"identifier": "java-1"}, "flowInfo": None}


def check_for_both_parsers(resp: Any) -> list[dict[str, Any]]:
    """Assert a heartbeat response satisfies the C++ (RESTProtocol) and Java (C2HeartbeatResponse) parsers."""
    assert isinstance(resp, dict) and isinstance(resp.get("requestedOperations"), list), resp
    ops: list[dict[str, Any]] = resp["requestedOperations"]
    for op in ops:
        assert isinstance(op.get("identifier"), str) and op["identifier"], op  # the key both read
        assert op["operation"] in UPPER_OPERATIONS and op["operation"] == op["operation"].upper(), op  # Java enum toString
        assert isinstance(op["operand"], str) and op["operand"] == op["operand"].lower(), op
        args = op["args"]
        assert isinstance(args, dict), op
        if op["operation"] == "SYNC":
            assert op["operand"] == "resource"
            gh = args["globalHash"]
            assert isinstance(gh, dict) and isinstance(gh["digest"], str) and gh["hashType"] == "SHA256", gh
            assert isinstance(args["resourceList"], list) and args["resourceList"]
            for item in args["resourceList"]:
                for key in RESOURCE_KEYS:
                    assert isinstance(item.get(key), str), (key, item)
                assert item["resourceType"] == "ASSET"
                assert validate_relative_file_path(f"{item['resourcePath']}/{item['resourceName']}") is None, item
                _absolute(item["url"])
        elif op["operation"] == "UPDATE":
            assert op["operand"] == "asset"
            for key in ("file", "url", "forceDownload"):
                assert isinstance(args.get(key), str), (key, args)
            assert validate_relative_file_path(args["file"]) is None
            assert args["forceDownload"] in ("true", "false")
            _absolute(args["url"])
    return ops


def _absolute(url: str) -> None:
    parts = urlsplit(url)  # Java's LegacyC2UrlProvider: "Relative C2 urls are not supported"
    assert parts.scheme in ("http", "https") and parts.netloc, f"not an absolute URL: {url}"
