"""The device's network seams: HTTP (``edgefleet.http.HttpClient`` plus one streaming fetch) and MQTT (paho-mqtt 2.x).

As in python-tuf's fetcher, every transport failure surfaces as one ``DownloadError`` (or
``TransportError``) with the URL and the reason, and downloads enforce a maximum length while
streaming. JSON requests go through the contract's one HTTP client; what it cannot do (stream
a download with ``Range``, or read the ``ETag`` of a conditional poll) goes through this
module's one fetch seam, :meth:`Http._open`. ``download`` resumes a cut transfer from the
bytes already on disk with ``Range`` and ``If-Range``; a server that ignores the range (200
instead of 206) or whose ETag changed restarts the file, anything else continues it. Topic
names come from ``edgefleet.protocol``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgefleet.http import HttpClient
from edgefleet.protocol import DeviceLeaf, device_topic
from runtimes.python.errors import DeviceError, DownloadError

CHUNK = 64 * 1024

log = logging.getLogger(__name__)

class TransportError(DeviceError):
    """An HTTP or MQTT exchange failed; ``status`` is the HTTP status when there was one.

    ``HttpClient`` raises it with one line and sets ``status`` on it (``None``: no usable reply).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in (408, 429)


def backoff_delay(attempt: int, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter."""
    return (rng or random).uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))


class Http:
    """The device's HTTP side: JSON calls through :class:`HttpClient`, fetches through :meth:`_open`."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 10.0) -> None:
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.client = HttpClient(self.base, token, error=TransportError, timeout=timeout)

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as compact JSON (the encoding batch sizes are measured in); the decoded reply."""
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            return self.client.request("POST", path, raw=data, headers={"Content-Type": "application/json"})
        except (ValueError, http.client.HTTPException) as exc:  # a reply that is not JSON, or a cut one
            raise TransportError(f"POST {self.base}{path}: {exc}") from exc

    def get_json(self, path: str, etag: str | None = None) -> tuple[int, str | None, Any]:
        """A conditional GET: ``(status, etag, body)``; ``(304, etag, None)`` when unchanged."""
        resp = self.client.exchange("GET", path, headers={"If-None-Match": etag} if etag else None)
        if resp.status == 304:
            return 304, etag, None
        try:
            return resp.status, resp.headers.get("ETag"), resp.json()
        except ValueError as exc:
            raise TransportError(f"GET {self.base}{path}: the reply is not JSON: {exc}", resp.status) from exc

    @contextlib.contextmanager
    def bounded(self, seconds: float) -> Iterator[None]:
        """Within the block no request waits longer than ``seconds`` (at least 0.1 s) for the
        server: the final flush on SIGTERM must end within its bound even if the server hangs."""
        saved = self.timeout, self.client.timeout
        limit = max(0.1, seconds)
        self.timeout, self.client.timeout = min(self.timeout, limit), min(self.client.timeout, limit)
        try:
            yield
        finally:
            self.timeout, self.client.timeout = saved

    def _url(self, path: str) -> str:
        return path if path.startswith("http") else self.base + path

    def _open(self, method: str, path: str, headers: dict[str, str]) -> Any:
        """The one fetch seam: an open response (a context manager) for ``path``; raises urllib's errors."""
        req = urllib.request.Request(self._url(path), method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in headers.items():
            req.add_header(k, v)
        return urllib.request.urlopen(req, timeout=self.timeout)

    def download(self, path: str, dest: Path, *, size: int, sha256: str, max_bytes: int,
                 progress: Callable[[int, int], None] | None = None) -> Path:
        """Fetch ``path`` into ``dest``, resuming ``dest.part``; verify size and sha256."""
        url = self._url(path)
        if size > max_bytes:
            raise DownloadError(f"{path}: announced size {size} exceeds the maximum of {max_bytes} bytes")
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        headers = {}
        if 0 < have < size:
            headers = {"Range": f"bytes={have}-", "If-Range": f'"{sha256}"'}
        if have < size:
            if have:
                log.info("downloading %s: resuming at byte %d of %d (%d bytes already on disk)", url, have, size, have)
            else:
                log.info("downloading %s: starting, %d bytes announced", url, size)
            try:
                with self._open("GET", path, headers) as resp:
                    mode = "ab"
                    if resp.status == 200:  # range ignored or ETag changed: start over
                        have, mode = 0, "wb"
                    elif resp.status != 206:
                        raise DownloadError(f"GET {url}: unexpected HTTP {resp.status}")
                    with open(part, mode) as fh:
                        while True:
                            chunk = resp.read(CHUNK)
                            if not chunk:
                                break
                            have += len(chunk)
                            if have > size or have > max_bytes:
                                raise DownloadError(f"GET {url}: more than the announced {size} bytes")
                            fh.write(chunk)
                            if progress:
                                progress(have, size)
                        fh.flush()
                        os.fsync(fh.fileno())
            except urllib.error.HTTPError as exc:
                if exc.code == 416:
                    part.unlink(missing_ok=True)
                raise DownloadError(f"GET {url}: HTTP {exc.code} ({_server_says(exc)})") from exc
            except urllib.error.URLError as exc:  # no reply at all: refused, unresolvable, timed out
                raise DownloadError(f"GET {url}: cannot reach the fleet server ({exc.reason}); "
                                    f"{part.stat().st_size if part.exists() else 0} of {size} bytes on disk") from exc
            except (OSError, http.client.HTTPException) as exc:  # a cut connection keeps .part for the resume
                raise DownloadError(f"GET {url}: interrupted after {part.stat().st_size if part.exists() else 0} of {size} bytes: {getattr(exc, 'reason', exc)}") from exc
        got = part.stat().st_size
        if got != size:
            raise DownloadError(f"GET {url}: got {got} of {size} bytes; will resume")
        digest = hashlib.sha256()
        with open(part, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            part.unlink()
            raise DownloadError(f"GET {url}: sha256 {digest.hexdigest()} does not match the assignment's {sha256}; discarded")
        os.replace(part, dest)
        log.info("downloaded %s: %d bytes, sha256 matches the assignment", url, size)
        return dest


def _server_says(exc: urllib.error.HTTPError) -> str:
    """The reason an HTTP error reply gives: the ``error`` of its JSON body, else the status text."""
    try:
        body = exc.read(4096)
        msg = json.loads(body).get("error") if body else None
    except (ValueError, AttributeError, OSError, http.client.HTTPException):
        msg = None
    text = str(msg) if msg else str(exc.reason or "no reason given")
    return ("server error: " if exc.code >= 500 else "") + text[:300]


class MqttLink:
    """A paho-mqtt 2.x client on its own network thread, with auto-reconnect.

    ``on_assignment`` is called with the raw payload of the retained assignment topic, ``on_ack``
    with the raw payload of each server ack on ``edgefleet/v1/devices/<id>/ack`` (both on paho's
    thread). The session is clean, so both topics are subscribed again on every connect;
    :attr:`epoch` counts the connects, so the caller can tell its connection was replaced (what
    was in flight on the old one is resent). ``publish`` returns True only once the broker
    acknowledged (PUBACK) within ``timeout``; that is the broker's receipt, not the server's ack.
    """

    def __init__(self, url: str, device_id: str, token: str | None, *, on_assignment: Callable[[bytes], None],
                 on_ack: Callable[[bytes], None] | None = None,
                 reconnect_min: float = 1.0, reconnect_max: float = 60.0) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp", ""):
            raise DeviceError(f"--mqtt {url}: only mqtt://host:port is supported")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.device_id = device_id
        self._on_assignment = on_assignment
        self._on_ack = on_ack
        self.epoch = 0
        self.connected = threading.Event()
        self._stopping = False
        self._failed_connects = 0  # since the last connect: the first failure is a WARNING, repeats are DEBUG
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgefleet-device-{device_id}", clean_session=True)
        if token:
            self.client.username_pw_set(device_id, token)
        self.client.reconnect_delay_set(min_delay=max(1, int(reconnect_min)), max_delay=int(reconnect_max))
        self._reconnect_max = int(reconnect_max)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_connect_fail = self._connect_failed
        self.client.on_message = self._message
        self.client.on_subscribe = self._subscribed
        self.client.max_queued_messages_set(0)

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def _connected(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT connect to %s:%s refused: %s", self.host, self.port, reason)
        else:
            topics = [(device_topic(self.device_id, "assignment"), 1)] + ([(device_topic(self.device_id, "ack"), 1)] if self._on_ack else [])
            client.subscribe(topics)  # connected once SUBACKed, so no ack can precede the subscription

    def _connect_failed(self, client: Any, userdata: Any) -> None:
        self._failed_connects += 1
        level = logging.WARNING if self._failed_connects == 1 else logging.DEBUG
        log.log(level, "MQTT broker %s:%s unreachable (attempt %d); paho retries with backoff up to %ss, HTTP carries "
                "telemetry and status meanwhile", self.host, self.port, self._failed_connects, self._reconnect_max)

    def _subscribed(self, client: Any, userdata: Any, mid: Any, reasons: Any = None, properties: Any = None) -> None:
        if self._failed_connects:
            log.info("MQTT broker %s:%s reachable again after %d failed attempt(s)", self.host, self.port, self._failed_connects)
        self._failed_connects = 0
        self.epoch += 1
        log.info("MQTT connected to %s:%s and subscribed (connection %d)", self.host, self.port, self.epoch)
        self.connected.set()

    def _disconnected(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if self._stopping:
            log.info("MQTT disconnected from %s:%s (stopping)", self.host, self.port)
        elif self.connected.is_set():
            log.warning("MQTT connection to %s:%s lost: %s; paho reconnects with backoff", self.host, self.port, reason)
        self.connected.clear()

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            self._dispatch(msg)
        except Exception:  # paho's network thread must survive a bad handler; the cause is logged with its traceback
            log.exception("handling an MQTT message on %s failed", msg.topic)

    def _dispatch(self, msg: Any) -> None:
        if msg.topic == device_topic(self.device_id, "assignment") and msg.payload:
            self._on_assignment(bytes(msg.payload))
        elif msg.topic == device_topic(self.device_id, "ack") and msg.payload and self._on_ack is not None:
            self._on_ack(bytes(msg.payload))

    def publish(self, suffix: DeviceLeaf, payload: Any, *, retain: bool = False, timeout: float = 10.0) -> bool:
        if not self.connected.is_set():
            return False
        info = self.client.publish(device_topic(self.device_id, suffix), json.dumps(payload, separators=(",", ":")), qos=1, retain=retain)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):  # paho raises these when the client is disconnected mid-publish
            return False
        return info.is_published()
