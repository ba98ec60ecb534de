"""A small real HTTP server speaking the device protocol (docs/protocol.md) for device tests.

It is the stand-in the device-runtime issue asks for until the fleet server exists: real
sockets, real HTTP, Range/If-Range/ETag on artifacts, idempotent telemetry by message id. It
can cut an artifact response after N bytes to test resumable downloads, and it logs every
request so tests can check what the agent sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgefleet import keys
from edgefleet.bundle_format import canonical_json


def sign_assignment(assignment: dict[str, Any], private_key: Any) -> dict[str, Any]:
    sig = keys.sign(private_key, canonical_json(assignment))
    return {"assignment": assignment, "key_id": keys.key_id(private_key.public_key()), "signature": base64.b64encode(sig).decode()}


class ProtocolServer:
    def __init__(self) -> None:
        self.assignments: dict[str, dict[str, Any]] = {}
        self.artifacts: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}  # sha -> bytes to send before cutting, applied once
        self.telemetry_ids: dict[str, int] = {}
        self.statuses: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                entry = {"method": "GET", "path": self.path, "range": self.headers.get("Range"), "if_none_match": self.headers.get("If-None-Match")}
                with server.lock:
                    server.log.append(entry)
                m = re.fullmatch(r"/api/v1/devices/([^/]+)/assignment", self.path)
                if m:
                    env = server.assignments.get(m.group(1))
                    if env is None:
                        entry["status"] = 404
                        return self._json(404, {"error": "assignment: none"})
                    etag = '"' + hashlib.sha256(canonical_json(env)).hexdigest() + '"'
                    if self.headers.get("If-None-Match") == etag:
                        entry["status"] = 304
                        self.send_response(304)
                        self.send_header("ETag", etag)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    entry["status"] = 200
                    return self._json(200, env, {"ETag": etag})
                m = re.fullmatch(r"/api/v1/artifacts/([0-9a-f]{64})", self.path)
                if not m or m.group(1) not in server.artifacts:
                    entry["status"] = 404
                    return self._json(404, {"error": "artifact: not found"})
                sha = m.group(1)
                data = server.artifacts[sha]
                start, code = 0, 200
                rng = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if rng and (if_range is None or if_range == f'"{sha}"'):
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))  # type: ignore[union-attr]
                    code = 206
                body = data[start:]
                entry["status"], entry["start"] = code, start
                self.send_response(code)
                self.send_header("ETag", f'"{sha}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = server.cut_after.pop(sha, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    entry["cut_at"] = start + cut
                    return None
                self.wfile.write(body)
                return None

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"null")
                with server.lock:
                    server.log.append({"method": "POST", "path": self.path})
                if self.path.endswith("/telemetry"):
                    dup = 0
                    with server.lock:
                        for msg in body["messages"]:
                            dup += msg["id"] in server.telemetry_ids
                            server.telemetry_ids[msg["id"]] = server.telemetry_ids.get(msg["id"], 0) + 1
                    return self._json(200, {"accepted": len(body["messages"]) - dup, "duplicates": dup})
                if self.path.endswith("/status"):
                    with server.lock:
                        server.statuses.append(body)
                    self.send_response(204)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return self._json(404, {"error": "path: unknown"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> "ProtocolServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def publish_bundle(self, archive: bytes) -> tuple[str, int]:
        sha = hashlib.sha256(archive).hexdigest()
        self.artifacts[sha] = archive
        return sha, len(archive)
