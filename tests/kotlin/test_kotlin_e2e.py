"""End to end: the Kotlin SDK against a real fleet server on loopback.

A TCP proxy in front of the server cuts the first bundle download after 40% of its bytes; the
Kotlin client must resume it with ``Range`` (the proxy sees ``bytes=N-`` with N > 0 and a 206),
verify, install (canaries through ai-edge-litert) and report ``installed``; a second rollout
whose canaries are wrong must be reverted and reported as failed; telemetry sent from Kotlin is
stored and appears in the server's drift aggregation.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

from edgefleet.bundle_format import open_bundle
from fleet_server.core import ServerConfig
from fleet_server.serve import FleetServer
from tests.fleet_server.conftest import Api, wait_for
from tests.kotlin.build import classpath
from tests.kotlin.conftest import JAVA, PYTHON, WORKER, poison_canaries
from tests.web.vectors import _records


class CuttingProxy:
    """Forwards 127.0.0.1:port to the server; the first artifact download is cut after ``fraction`` of its body."""

    def __init__(self, fraction: float = 0.4) -> None:
        self.upstream, self.fraction = 0, fraction  # the server's port, set once it listens
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.statuses: list[str] = []
        self.cut_at: int | None = None
        self.log: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(client,), daemon=True).start()

    def _one(self, client: socket.socket) -> None:
        try:
            self._relay(client)
        except OSError:  # a peer closed first: nothing to relay any more
            client.close()

    def _relay(self, client: socket.socket) -> None:
        up = socket.create_connection(("127.0.0.1", self.upstream))
        with client, up:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            text = head.split(b"\r\n\r\n")[0].decode("latin-1")
            self.log.append(text.split("\r\n")[0])
            is_artifact = "/api/v1/artifacts/" in text.split("\r\n")[0]
            if is_artifact:
                self.requests.append(text)
            cut = is_artifact and self.cut_at is None
            # one request per connection: the server closes after its answer, and the client sees "Connection: close"
            head = re.sub(rb"(?im)^connection:[^\r\n]*\r\n", b"", head).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            up.sendall(head)
            n_req = int(m.group(1)) if (m := re.search(r"(?im)^content-length:\s*(\d+)", text)) else 0
            body = len(head.split(b"\r\n\r\n", 1)[1])
            while body < n_req:
                chunk = client.recv(65536)
                up.sendall(chunk)
                body += len(chunk)
            sent, resp, total = 0, b"", None
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    return
                resp += chunk if total is None else b""
                if total is None and b"\r\n\r\n" in resp:
                    rhead = resp.split(b"\r\n\r\n")[0].decode("latin-1")
                    if is_artifact:
                        self.statuses.append(rhead.split("\r\n")[0])
                    length = re.search(r"(?im)^content-length:\s*(\d+)", rhead)
                    total = int(length.group(1)) if length else 0
                    if cut:
                        self.cut_at = len(rhead) + 4 + int(total * self.fraction)
                if cut and self.cut_at is not None and sent + len(chunk) >= self.cut_at:
                    client.sendall(chunk[: self.cut_at - sent])
                    return  # the connection drops mid-body
                client.sendall(chunk)
                sent += len(chunk)


def test_kotlin_client_against_a_real_fleet_server(kotlin_build: dict[str, str], make_tflite_bundle: Callable[..., Path],
                                                    keypair: dict[str, Any], fresh_data: Any, tmp_path: Path) -> None:
    proxy = CuttingProxy()  # the credential's server URL is the proxy's: every device request passes it
    server = FleetServer(ServerConfig(data_dir=tmp_path / "fleet", trust_keys=[keypair["public_path"]], embedded_broker=False, port=0,
                                      reconcile_seconds=0.2, public_url=f"http://127.0.0.1:{proxy.port}")).start()
    proxy.upstream = int(server.url.rsplit(":", 1)[1])
    proc = None
    try:
        api = Api(server)
        assert api("POST", "/api/v1/models", raw=make_tflite_bundle(1).read_bytes())[0] == 201
        code, tok, _ = api("POST", "/api/v1/enrollment-tokens", {"group": "default", "tags": []})
        assert code == 201
        names = [f["name"] for f in json.loads(open_bundle(make_tflite_bundle(1)).manifest_bytes)["input_schema"]["fields"]]
        records = json.loads(json.dumps(_records(fresh_data.iloc[:40], names)))
        (tmp_path / "records.json").write_text(json.dumps(records))
        plan = {"server": f"http://127.0.0.1:{proxy.port}", "token": tok["token"], "device_id": "phone-1", "dir": str(tmp_path / "phone"),
                "python": PYTHON, "worker": str(WORKER), "records": str(tmp_path / "records.json"), "timeout": 150, "features": True}
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        proc = subprocess.Popen([JAVA, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", classpath(kotlin_build), "edgefleet.test.MainKt",
                                 "e2e", str(tmp_path / "plan.json")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []

        def read() -> None:
            assert proc is not None and proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()
        seen = lambda prefix: any(line.startswith(prefix) for line in lines)  # noqa: E731
        wait_for(lambda: seen("REPORTED") or seen("FAIL"), timeout=60, what="the Kotlin device to enrol and report")
        dev = api("GET", "/api/v1/devices/phone-1")[1]
        assert dev["capabilities"] == {"backends": ["tflite"], "formats": ["tflite"]}, lines

        code, r1, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100]})
        assert code == 201, r1
        wait_for(lambda: seen("INSTALLED 1") or seen("FAIL"), timeout=120, what=f"Kotlin to install v1 ({lines[-3:]})")
        st = wait_for(lambda: (lambda s: s if s["state"] == "completed" else None)(api("GET", f"/api/v1/rollouts/{r1['id']}")[1]), timeout=30,
                      what="rollout 1 to complete")
        assert st["counts"].get("installed") == 1, st
        assert proxy.cut_at is not None and len(proxy.requests) >= 2
        ranges = [m.group(1) for req in proxy.requests[1:] if (m := re.search(r"(?im)^range:\s*bytes=(\d+)-", req))]
        assert ranges and int(ranges[0]) > 0, proxy.requests
        assert "206" in proxy.statuses[1], proxy.statuses
        dev = api("GET", "/api/v1/devices/phone-1")[1]
        assert dev["active_version"] == 1 and dev["last_install"]["result"] == "installed"
        assert "LOG assignment unchanged (304)" in lines, "polls after the install must be answered 304 (If-None-Match)"

        assert api("POST", "/api/v1/models", raw=make_tflite_bundle(2, edit=poison_canaries, name="churn-v2-bad.tar").read_bytes())[0] == 201
        code, r2, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100]})
        assert code == 201, r2
        wait_for(lambda: seen("RESULT 2") or seen("FAIL"), timeout=120, what="Kotlin to refuse v2")
        st2 = wait_for(lambda: (lambda s: s if s["state"] != "running" else None)(api("GET", f"/api/v1/rollouts/{r2['id']}")[1]), timeout=30,
                       what="rollout 2 to settle")
        assert st2["state"] == "halted" and "refused: health check failed" in st2["reason"], st2  # the server's gate saw the failure
        dev = api("GET", "/api/v1/devices/phone-1")[1]
        assert dev["active_version"] == 1 and dev["last_install"]["result"].startswith("refused: health check failed"), dev

        wait_for(lambda: seen("TELEMETRY") or seen("FAIL"), timeout=60, what="Kotlin telemetry")
        assert proc.wait(timeout=30) == 0, "\n".join(lines)
        assert not [line for line in lines if line.startswith("FAIL")], "\n".join(lines)
        assert sum(line.startswith("PASS") for line in lines) == 5 and any(line.startswith("PASS rollout 1 off Wi-Fi") for line in lines), lines
        drift = wait_for(lambda: (lambda d: d if d[1].get("windows") else None)(api("GET", "/api/v1/models/churn/drift?version=1&start=0")),
                         timeout=30, what="drift windows")[1]
        total = sum(w.get("n", 0) for w in drift["windows"] if w.get("cohort") == "all")
        print(f"cut at byte {proxy.cut_at}, resumed with Range bytes={ranges[0]}-; rollout 2 {st2['state']}; drift n={total}")
        assert total == len(records), drift
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        server.stop()
