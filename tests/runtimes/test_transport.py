"""The device's HTTP side on a real local server: JSON goes through edgefleet.http.HttpClient,
errors keep their HTTP status (which decides retry or drop), the poll is conditional."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from edgefleet.protocol import device_topic
from runtimes.python.transport import Http, MqttLink, TransportError


class _Server:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append(data)
                if self.path == "/too-big":
                    self._reply(413, b'{"error": "batch over 262144 bytes"}')
                elif self.path == "/busy":
                    self._reply(503, b'{"error": "try later"}')
                elif self.path == "/not-json":
                    self._reply(200, b"<html>proxy page</html>")
                else:
                    assert self.headers["Content-Type"] == "application/json"
                    self._reply(200, b'{"stored": 1}')

            def do_GET(self) -> None:
                if self.headers.get("If-None-Match") == '"e1"':
                    self._reply(304, b"")
                else:
                    self._reply(200, b'{"serial": 1}', {"ETag": '"e1"'})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture()
def local() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_post_sends_compact_json_and_decodes_the_reply(local: _Server) -> None:
    assert Http(local.url, "t").post("/ok", {"a": [1, 2], "b": "x"}) == {"stored": 1}
    assert local.bodies[-1] == b'{"a":[1,2],"b":"x"}'  # the encoding batch byte budgets are measured in


def test_errors_keep_their_status(local: _Server) -> None:
    http = Http(local.url, "t")
    with pytest.raises(TransportError, match="HTTP 413: batch over 262144 bytes") as refused:
        http.post("/too-big", {})
    assert refused.value.status == 413 and not refused.value.retryable
    with pytest.raises(TransportError) as busy:
        http.post("/busy", {})
    assert busy.value.status == 503 and busy.value.retryable
    with pytest.raises(TransportError, match="POST .*/not-json") as junk:
        http.post("/not-json", {})
    assert junk.value.status is None


def test_unreachable_server_is_a_retryable_transport_error(local: _Server) -> None:
    port = local.httpd.server_address[1]
    local.httpd.shutdown()
    local.httpd.server_close()
    with pytest.raises(TransportError, match=f"cannot reach the fleet server at http://127.0.0.1:{port}") as info:
        Http(local.url, None, timeout=2).post("/ok", {})
    assert info.value.status is None and info.value.retryable


def test_conditional_poll_returns_the_etag_and_304(local: _Server) -> None:
    http = Http(local.url, "t")
    assert http.get_json("/a") == (200, '"e1"', {"serial": 1})
    assert http.get_json("/a", '"e1"') == (304, '"e1"', None)


def test_mqtt_topics_come_from_the_protocol() -> None:
    link = MqttLink("mqtt://127.0.0.1:1", "dev-9", None, on_assignment=lambda b: None)
    assert device_topic("dev-9", "assignment") == "edgefleet/v1/devices/dev-9/assignment"
    got: list[bytes] = []
    link._on_assignment = got.append

    class Msg:
        topic, payload = "edgefleet/v1/devices/dev-9/assignment", b"{}"

    class Other:
        topic, payload = "edgefleet/v1/devices/dev-10/assignment", b"{}"

    link._message(None, None, Msg())
    link._message(None, None, Other())
    assert got == [b"{}"]
