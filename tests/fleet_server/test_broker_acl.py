"""Broker-enforced topic ACLs, on real brokers: embedded amqtt and a Mosquitto process.

Every test runs against both brokers with real paho clients over loopback; nothing is mocked.
Negative checks ("A receives nothing of B's") are made deterministic by ordering: A's denied
request goes first and an allowed request follows on the same connection, so once the allowed
result arrives anything the broker would have let through has arrived too. A short grace
period on top covers broker-internal fan-out.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edgefleet.protocol import SERVER_USERNAME, device_topic
from fleet_server.mqtt.broker import (
    DEVICE_CLIENT_PREFIX,
    BrokerAccess,
    EmbeddedBroker,
    InMemoryCredentials,
    Op,
)
from fleet_server.mqtt.mosquitto import MosquittoAccess, MosquittoBroker

pytestmark = pytest.mark.timeout(60)

A, B, C = "dev-a", "dev-b", "dev-c"
TOKENS = {A: "token-a-0123456789", B: "token-b-0123456789"}
GRACE = 0.4  # seconds to wait after an ordering barrier, for broker-internal fan-out


class Probe:
    """A paho client driven by hand (``loop()``), so every wait in a test has a deadline."""

    def __init__(self, port: int, username: str | None, password: str | None, client_id: str = "") -> None:
        self.port = port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.connack: mqtt.ReasonCode | None = None
        self.closed = False
        self.messages: list[mqtt.MQTTMessage] = []
        self.subacks: dict[int, list[int]] = {}
        self.client.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc)
        self.client.on_disconnect = lambda c, u, f, rc, p: setattr(self, "closed", True)
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, [int(r.value) for r in rcs])

    def pump(self, until: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until():
                return True
            if self.closed:
                return until()
            self.client.loop(timeout=0.05)
        return until()

    def connect(self, timeout: float = 5.0) -> bool:
        """True when the broker accepted the login; False on a refusal or a dropped socket."""
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        except OSError:
            return False
        self.pump(lambda: self.connack is not None or self.closed, timeout)
        return self.connack is not None and not self.connack.is_failure and not self.closed

    def subscribe(self, topic: str) -> list[int] | None:
        """The SUBACK codes (0x80 = refused), or None if the broker dropped the connection."""
        _, mid = self.client.subscribe(topic, qos=1)
        self.pump(lambda: mid in self.subacks)
        return self.subacks.get(mid)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        self.pump(info.is_published, timeout=3.0)

    def wait_for(self, topic: str, timeout: float = 5.0) -> bool:
        return self.pump(lambda: any(m.topic == topic for m in self.messages), timeout)

    def settle(self, seconds: float = GRACE) -> None:
        self.pump(lambda: False, seconds)

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]

    def close(self) -> None:
        if not self.closed:
            self.client.disconnect()


@dataclass
class Harness:
    """One running broker plus the credential store behind it."""

    kind: str
    port: int
    access: BrokerAccess
    creds: InMemoryCredentials
    sync: Callable[[], None]  # push credential changes to the broker (Mosquitto: rewrite + SIGHUP)

    def probe(self, username: str | None, password: str | None, client_id: str | None = None) -> Probe:
        if client_id is None:
            client_id = f"{DEVICE_CLIENT_PREFIX}{username}" if username not in (None, SERVER_USERNAME) else ""
        return Probe(self.port, username, password, client_id)

    def device(self, device_id: str) -> Probe:
        p = self.probe(device_id, self.creds.token_for(device_id))
        assert p.connect(), f"{self.kind}: enrolled device {device_id} could not connect"
        return p

    def server(self) -> Probe:
        p = self.probe(SERVER_USERNAME, self.access.server_password, client_id="edgefleet-server-test")
        assert p.connect(), f"{self.kind}: server account could not connect"
        return p


@pytest.fixture(params=["amqtt", "mosquitto"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    creds = InMemoryCredentials(TOKENS)
    access = BrokerAccess(creds)
    if request.param == "amqtt":
        embedded = EmbeddedBroker(access).start()
        try:
            yield Harness("amqtt", embedded.port, access, creds, lambda: None)  # live lookup: nothing to push
        finally:
            embedded.stop()
        return
    mosq = MosquittoBroker(MosquittoAccess(tmp_path / "mosquitto", access)).start()
    try:
        yield Harness("mosquitto", mosq.port, access, creds, mosq.reload)
    finally:
        mosq.stop()


def test_policy_table() -> None:
    """The pure policy that both brokers are configured from."""
    allowed = BrokerAccess.allowed
    assert allowed(A, Op.SUBSCRIBE, device_topic(A, "assignment"))
    assert not allowed(A, Op.SUBSCRIBE, device_topic(B, "assignment"))
    assert not allowed(A, Op.SUBSCRIBE, "edgefleet/v1/devices/+/assignment")
    assert not allowed(A, Op.RECEIVE, device_topic(B, "assignment"))
    assert allowed(A, Op.PUBLISH, device_topic(A, "telemetry")) and allowed(A, Op.PUBLISH, device_topic(A, "status"))
    assert not allowed(A, Op.PUBLISH, device_topic(B, "telemetry")) and not allowed(A, Op.PUBLISH, device_topic(A, "assignment"))
    assert allowed(SERVER_USERNAME, Op.SUBSCRIBE, "edgefleet/v1/#")
    assert not allowed(SERVER_USERNAME, Op.SUBSCRIBE, "#") and not allowed(None, Op.SUBSCRIBE, device_topic(A, "assignment"))
    assert allowed(A, Op.SUBSCRIBE, device_topic(A, "ack")) and allowed(A, Op.RECEIVE, device_topic(A, "ack"))
    assert not allowed(A, Op.SUBSCRIBE, device_topic(B, "ack")) and not allowed(A, Op.RECEIVE, device_topic(B, "ack"))
    assert not allowed(A, Op.SUBSCRIBE, "edgefleet/v1/devices/+/ack") and not allowed(A, Op.PUBLISH, device_topic(A, "ack"))
    assert allowed(SERVER_USERNAME, Op.PUBLISH, device_topic(B, "ack"))


def test_wrong_password_and_anonymous_are_refused(broker: Harness) -> None:
    assert not broker.probe(None, None, client_id="").connect(), "anonymous login accepted"
    assert not broker.probe(A, "wrong-token").connect(), "wrong device token accepted"
    assert not broker.probe(A, "").connect(), "empty password accepted"
    assert not broker.probe(SERVER_USERNAME, "wrong", client_id="srv").connect(), "wrong server password accepted"
    assert not broker.probe("unknown-device", "token-a-0123456789").connect(), "unknown user accepted"
    broker.device(A).close()
    broker.server().close()


def test_device_cannot_subscribe_to_another_devices_assignment(broker: Harness) -> None:
    server = broker.server()
    server.publish(device_topic(A, "assignment"), b"for-a", retain=True)
    server.publish(device_topic(B, "assignment"), b"for-b", retain=True)
    a = broker.device(A)

    codes = a.subscribe(device_topic(B, "assignment"))
    if broker.kind == "amqtt":
        assert codes == [0x80], f"amqtt: SUBACK for B's topic was {codes}"
    else:
        # Measured: Mosquitto 2.0.11's acl_file never checks SUBSCRIBE (it grants even "#") and
        # enforces `read` on every delivery instead, so the guarantee is "receives nothing".
        assert codes is None or codes in ([0x80], [1]), f"mosquitto: SUBACK for B's topic was {codes}"
    if codes is None:  # the broker dropped A instead of answering 0x80: reconnect for the rest
        a = broker.device(A)
    wildcard = a.subscribe("edgefleet/v1/devices/+/assignment")
    assert wildcard is not None, f"{broker.kind}: dropped A on a wildcard subscribe"
    own = a.subscribe(device_topic(A, "assignment"))
    assert own == [1], f"{broker.kind}: SUBACK for A's own topic was {own}"
    assert a.wait_for(device_topic(A, "assignment")), f"{broker.kind}: A never got its retained assignment"
    a.settle()
    assert device_topic(B, "assignment") not in a.topics(), f"{broker.kind}: A received B's assignment"
    assert [m.payload for m in a.messages if m.topic == device_topic(A, "assignment")][0] == b"for-a"
    assert all(m.retain for m in a.messages)

    server.publish(device_topic(B, "assignment"), b"for-b-v2", retain=True)  # a live (not retained) delivery
    server.publish(device_topic(A, "assignment"), b"for-a-v2", retain=True)
    assert a.pump(lambda: b"for-a-v2" in [m.payload for m in a.messages])
    a.settle()
    assert device_topic(B, "assignment") not in a.topics(), f"{broker.kind}: A received B's live assignment"
    a.close()
    server.close()


def test_retained_assignment_does_not_leak_on_connect(broker: Harness) -> None:
    """amqtt 0.12.1 pushes every retained message matching *anyone's* subscription to each
    new session; fleet_server.mqtt.broker closes that. A subscribes to nothing and must get nothing."""
    server = broker.server()
    server.publish(device_topic(B, "assignment"), b"for-b", retain=True)
    b = broker.device(B)
    assert b.subscribe(device_topic(B, "assignment")) == [1]
    assert b.wait_for(device_topic(B, "assignment"))
    a = broker.device(A)
    a.settle(1.0)
    assert a.topics() == [], f"{broker.kind}: A received {a.topics()} without subscribing"
    for p in (a, b, server):
        p.close()


def test_device_cannot_publish_to_another_devices_topics(broker: Harness) -> None:
    server = broker.server()
    assert server.subscribe(device_topic(B, "telemetry")) == [1]
    assert server.subscribe(device_topic(B, "status")) == [1]
    assert server.subscribe(device_topic(A, "telemetry")) == [1]
    a = broker.device(A)
    a.publish(device_topic(B, "telemetry"), b"forged-telemetry")
    a.publish(device_topic(B, "status"), b"forged-status", retain=True)
    a.publish(device_topic(A, "assignment"), b"self-assigned", retain=True)
    if a.closed:  # a broker may drop a client on a denied publish; the result must be the same
        a = broker.device(A)
    a.publish(device_topic(A, "telemetry"), b"real-telemetry")
    assert server.wait_for(device_topic(A, "telemetry")), f"{broker.kind}: A's own telemetry was not delivered"
    server.settle()
    assert server.topics() == [device_topic(A, "telemetry")], f"{broker.kind}: server saw {server.topics()}"
    assert server.messages[0].payload == b"real-telemetry"

    # The forged retained status must not have been stored either.
    late = broker.server()
    assert late.subscribe(device_topic(B, "status")) == [1]
    assert late.subscribe(device_topic(A, "assignment")) == [1]
    late.settle(0.6)
    assert late.topics() == [], f"{broker.kind}: forged retained messages were stored: {late.topics()}"
    for p in (a, server, late):
        p.close()


def test_device_enrolled_after_start_can_connect(broker: Harness) -> None:
    token = "token-c-0123456789"
    assert not broker.probe(C, token).connect(), "C connected before enrollment"
    broker.creds.set(C, token)
    broker.sync()
    # Mosquitto rereads its files asynchronously after SIGHUP, so poll with a deadline.
    deadline = time.monotonic() + 5
    while not (c := broker.probe(C, token)).connect():
        assert time.monotonic() < deadline, f"{broker.kind}: C still refused 5 s after enrollment"
        time.sleep(0.1)
    assert c.subscribe(device_topic(C, "assignment")) == [1]
    c.close()

    broker.creds.remove(C)
    broker.sync()
    deadline = time.monotonic() + 5
    while broker.probe(C, token).connect():
        assert time.monotonic() < deadline, f"{broker.kind}: C still accepted 5 s after revocation"
        time.sleep(0.1)


def test_embedded_refuses_session_takeover_by_client_id() -> None:
    """A device may not log in under another device's client id (amqtt would hand it B's
    session). An embedded-broker rule: Mosquitto relies on its per-delivery ACL check instead."""
    access = BrokerAccess(InMemoryCredentials(TOKENS))
    embedded = EmbeddedBroker(access).start()
    try:
        def login(user: str, password: str, client_id: str) -> bool:
            return Probe(embedded.port, user, password, client_id).connect()

        assert login(A, TOKENS[A], f"{DEVICE_CLIENT_PREFIX}{A}")
        assert not login(A, TOKENS[A], f"{DEVICE_CLIENT_PREFIX}{B}")
        assert not login(SERVER_USERNAME, access.server_password, f"{DEVICE_CLIENT_PREFIX}{B}")
    finally:
        embedded.stop()


def test_device_gets_only_its_own_server_ack(broker: Harness) -> None:
    """The server's telemetry acks (edgefleet/v1/devices/<id>/ack): the server may publish any
    device's; A may subscribe to its own, never to B's (SUBACK 0x80 on amqtt; on the password-file
    Mosquitto, whose acl_file does not check SUBSCRIBE, A receives nothing of B's)."""
    server = broker.server()
    a = broker.device(A)
    codes = a.subscribe(device_topic(B, "ack"))
    if broker.kind == "amqtt":
        assert codes == [0x80], f"amqtt: SUBACK for B's ack topic was {codes}"
    else:
        assert codes is None or codes in ([0x80], [1]), f"mosquitto: SUBACK for B's ack topic was {codes}"
    if codes is None:
        a = broker.device(A)
    assert a.subscribe("edgefleet/v1/devices/+/ack") is not None
    assert a.subscribe(device_topic(A, "ack")) == [1], f"{broker.kind}: A may not subscribe to its own ack topic"
    server.publish(device_topic(B, "ack"), b'{"for": "b"}')
    server.publish(device_topic(A, "ack"), b'{"for": "a"}')
    assert a.pump(lambda: device_topic(A, "ack") in a.topics()), f"{broker.kind}: A never got its own ack"
    a.settle()
    assert device_topic(B, "ack") not in a.topics(), f"{broker.kind}: A received B's ack"
    a.close()
    server.close()


def test_embedded_with_only_a_password_check_callback() -> None:
    """How fleet_server/serve.py starts it: the server keeps token hashes, so it passes a
    password_check; the topic ACL still applies, and a failing check refuses instead of crashing."""
    database_up = True

    def check(username: str, password: str) -> bool:
        if not database_up:
            raise RuntimeError("database is down")
        return TOKENS.get(username) == password

    embedded = EmbeddedBroker(check).start()
    try:
        a = Probe(embedded.port, A, TOKENS[A], f"{DEVICE_CLIENT_PREFIX}{A}")
        assert a.connect()
        assert a.subscribe(device_topic(B, "assignment")) == [0x80]
        assert a.subscribe(device_topic(A, "assignment")) == [1]
        a.close()
        assert not Probe(embedded.port, A, "wrong", f"{DEVICE_CLIENT_PREFIX}{A}").connect()
        assert not Probe(embedded.port, None, None).connect()
        database_up = False
        assert not Probe(embedded.port, A, TOKENS[A], f"{DEVICE_CLIENT_PREFIX}{A}").connect()
    finally:
        embedded.stop()


MOSQUITTO_SUB = shutil.which("mosquitto_sub")


def test_mosquitto_sub_cli_with_a_credentials_on_b_topic_is_refused(broker: Harness) -> None:
    server = broker.server()
    server.publish(device_topic(A, "assignment"), b"for-a", retain=True)
    server.publish(device_topic(B, "assignment"), b"for-b", retain=True)
    server.close()

    def sub(topic: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(MOSQUITTO_SUB), "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv311", "-q", "1",
               "-u", A, "-P", TOKENS[A], "-i", f"{DEVICE_CLIENT_PREFIX}{A}", "-t", topic, "-v", "-C", "1", "-W", "3"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10)

    theirs = sub(device_topic(B, "assignment"))
    result = (theirs.returncode, theirs.stdout, theirs.stderr)
    assert theirs.stdout == "", f"{broker.kind}: mosquitto_sub as A read B's assignment: {result}"
    if broker.kind == "amqtt":
        # SUBACK 0x80; mosquitto_sub 2.0.11 reports it on stderr but still exits 0.
        assert "All subscription requests were denied." in theirs.stderr, result
    else:
        # Mosquitto grants the SUBACK and withholds every message: -W expires (exit 27).
        assert theirs.returncode == 27 and "Timed out" in theirs.stderr, result
    # Positive control: the same invocation on A's own topic works, so the refusal is the ACL.
    own = sub(device_topic(A, "assignment"))
    assert own.returncode == 0 and own.stdout.strip() == f"{device_topic(A, 'assignment')} for-a", (own.returncode, own.stdout, own.stderr)
