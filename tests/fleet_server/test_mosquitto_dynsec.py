"""Mosquitto with the dynamic-security plugin, managed through DynsecAdmin: subscriptions refused.

One real Mosquitto (loopback, random port) per module; real paho clients and the real
``mosquitto_sub``. The negative checks use the ordering barrier of test_broker_acl.py: A's denied
request goes first and an allowed one follows on the same connection, so once the allowed result
arrives anything the broker would have let through has arrived too; GRACE covers fan-out.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.protocol import SERVER_USERNAME, device_topic
from fleet_server.mqtt.broker import DEVICE_CLIENT_PREFIX, BrokerError
from fleet_server.mqtt.dynsec import (
    ADMIN_USERNAME,
    CONTROL_TOPIC,
    DynsecAdmin,
    DynsecBroker,
    DynsecError,
    dynsec_password,
    dynsec_plugin_path,
)
from fleet_server.mqtt.mosquitto import mosquitto_binary
from tests.fleet_server.test_broker_acl import Probe

# `make test` installs mosquitto and mosquitto-clients: a missing broker is a failure, not a skip.
mosquitto_binary()
dynsec_plugin_path()

pytestmark = pytest.mark.timeout(60)

A, B = "dev-a", "dev-b"
GRACE = 0.4
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
SUBACK_FAILURE = 0x80


class Dynsec:
    def __init__(self, broker: DynsecBroker, admin: DynsecAdmin, server_password: str) -> None:
        self.broker, self.admin, self.server_password = broker, admin, server_password
        self.tokens = {A: "dev_" + secrets.token_urlsafe(32), B: "dev_" + secrets.token_urlsafe(32)}

    def probe(self, username: str | None, password: str | None, client_id: str | None = None) -> Probe:
        if client_id is None:
            client_id = f"{DEVICE_CLIENT_PREFIX}{username}"
        return Probe(self.broker.port, username, password, client_id)

    def device(self, device_id: str) -> Probe:
        p = self.probe(device_id, self.tokens[device_id])
        assert p.connect(), f"device {device_id} could not connect"
        return p

    def server(self) -> Probe:
        p = self.probe(SERVER_USERNAME, self.server_password, client_id=f"srv-{secrets.token_hex(3)}")
        assert p.connect(), "server account could not connect"
        return p


@pytest.fixture(scope="module")
def dynsec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dynsec]:
    broker = DynsecBroker(tmp_path_factory.mktemp("dynsec") / "mosquitto").start()
    admin = broker.admin()
    try:
        server_password = secrets.token_urlsafe(24)
        admin.ensure_server_account(SERVER_USERNAME, server_password)
        env = Dynsec(broker, admin, server_password)
        for device_id, token in env.tokens.items():
            admin.add_device(device_id, token)
        yield env
    finally:
        admin.close()
        broker.stop()


def test_config_file_is_what_the_plugin_expects(tmp_path: Path) -> None:
    """Our PBKDF2 fields equal what `mosquitto_ctrl dynsec init` writes for the same salt."""
    ctrl = shutil.which("mosquitto_ctrl")
    assert ctrl is not None, "mosquitto_ctrl missing: `make test` installs mosquitto-clients"
    path = tmp_path / "ctrl.json"
    subprocess.run([ctrl, "dynsec", "init", str(path), "admin", "pw-123"], check=True, capture_output=True, timeout=10)
    client = json.loads(path.read_text())["clients"][0]
    ours = dynsec_password("pw-123", client["iterations"], base64.b64decode(client["salt"]))
    assert ours == {k: client[k] for k in ("password", "salt", "iterations")}


def test_refused_logins(dynsec: Dynsec) -> None:
    assert not dynsec.probe(None, None, client_id="").connect(), "anonymous login accepted"
    assert not dynsec.probe(A, "wrong").connect(), "wrong token accepted"
    assert not dynsec.probe(A, dynsec.tokens[B]).connect(), "B's token accepted for A"
    assert not dynsec.probe(A, dynsec.tokens[A], client_id=f"{DEVICE_CLIENT_PREFIX}{B}").connect(), "A took B's client id"
    assert not dynsec.probe(SERVER_USERNAME, "wrong", client_id="srv").connect(), "wrong server password accepted"
    dynsec.device(A).close()


def test_device_subscribing_to_another_devices_assignment_gets_suback_failure(dynsec: Dynsec) -> None:
    server = dynsec.server()
    server.publish(device_topic(A, "assignment"), b"for-a", retain=True)
    server.publish(device_topic(B, "assignment"), b"for-b", retain=True)
    a = dynsec.device(A)

    assert a.subscribe(device_topic(B, "assignment")) == [SUBACK_FAILURE]
    assert a.subscribe("edgefleet/v1/devices/+/assignment") == [SUBACK_FAILURE]
    assert a.subscribe("#") == [SUBACK_FAILURE]
    assert a.subscribe(CONTROL_TOPIC + "/#") == [SUBACK_FAILURE]
    assert a.subscribe(device_topic(A, "assignment")) == [1]
    assert a.wait_for(device_topic(A, "assignment")), "A never got its retained assignment"
    a.settle()
    assert a.topics() == [device_topic(A, "assignment")] and a.messages[0].payload == b"for-a" and a.messages[0].retain

    server.publish(device_topic(B, "assignment"), b"for-b-v2", retain=True)  # live deliveries
    server.publish(device_topic(A, "assignment"), b"for-a-v2", retain=True)
    assert a.pump(lambda: b"for-a-v2" in [m.payload for m in a.messages])
    a.settle()
    assert device_topic(B, "assignment") not in a.topics(), "A received B's assignment"
    a.close()
    server.close()


def test_device_subscribing_to_another_devices_ack_gets_suback_failure(dynsec: Dynsec) -> None:
    """The server's telemetry ack topic: A subscribes to its own only; the server publishes any."""
    server = dynsec.server()
    a = dynsec.device(A)
    assert a.subscribe(device_topic(B, "ack")) == [SUBACK_FAILURE]
    assert a.subscribe("edgefleet/v1/devices/+/ack") == [SUBACK_FAILURE]
    assert a.subscribe(device_topic(A, "ack")) == [1]
    server.publish(device_topic(B, "ack"), b'{"for": "b"}')
    server.publish(device_topic(A, "ack"), b'{"for": "a"}')
    assert a.pump(lambda: device_topic(A, "ack") in a.topics()), "A never got its own ack"
    a.settle()
    assert a.topics() == [device_topic(A, "ack")] and a.messages[0].payload == b'{"for": "a"}'
    a.close()
    server.close()


def test_server_start_gives_old_device_roles_the_ack_topic(dynsec: Dynsec) -> None:
    """A device enrolled before the ack topic existed has a role without it; the server's start
    (``upgrade_device_roles``) adds it, and then the device may subscribe to its own ack only."""
    from fleet_server.mqtt.dynsec import device_acls, device_role

    old = [a for a in device_acls(B) if not a.topic.endswith("/ack")]
    assert len(old) == len(device_acls(B)) - 2
    dynsec.admin.ensure_role(device_role(B), old)
    b = dynsec.device(B)
    assert b.subscribe(device_topic(B, "ack")) == [SUBACK_FAILURE], "the old role already had the ack topic"
    b.close()
    assert dynsec.admin.upgrade_device_roles() >= 1
    assert dynsec.admin.upgrade_device_roles() == 0, "a second pass found more to fix"
    b = dynsec.device(B)
    assert b.subscribe(device_topic(B, "ack")) == [1]
    assert b.subscribe(device_topic(A, "ack")) == [SUBACK_FAILURE]
    b.close()


def test_device_publishing_on_another_devices_topics_is_not_delivered(dynsec: Dynsec) -> None:
    server = dynsec.server()
    for topic in ("edgefleet/v1/devices/+/telemetry", "edgefleet/v1/devices/+/status"):  # as mqtt_bridge.py subscribes
        assert server.subscribe(topic) == [1]
    a = dynsec.device(A)
    a.publish(device_topic(B, "telemetry"), b"forged-telemetry")
    a.publish(device_topic(B, "status"), b"forged-status", retain=True)
    a.publish(device_topic(A, "assignment"), b"self-assigned", retain=True)
    assert not a.closed
    a.publish(device_topic(A, "telemetry"), b"real-telemetry")
    assert server.wait_for(device_topic(A, "telemetry")), "A's own telemetry was not delivered"
    server.settle()
    assert server.topics() == [device_topic(A, "telemetry")] and server.messages[0].payload == b"real-telemetry"

    late = dynsec.server()  # the forged retained messages must not have been stored either
    assert late.subscribe(device_topic(B, "status")) == [1]
    late.settle(0.6)
    assert late.topics() == [], f"forged retained messages were stored: {late.topics()}"
    for p in (a, server, late):
        p.close()


def test_mosquitto_sub_with_a_credentials_on_b_topic_is_refused(dynsec: Dynsec) -> None:
    server = dynsec.server()
    server.publish(device_topic(A, "assignment"), b"for-a", retain=True)
    server.publish(device_topic(B, "assignment"), b"for-b", retain=True)
    server.close()

    def sub(topic: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(MOSQUITTO_SUB), "-h", "127.0.0.1", "-p", str(dynsec.broker.port), "-V", "mqttv311", "-q", "1",
               "-u", A, "-P", dynsec.tokens[A], "-i", f"{DEVICE_CLIENT_PREFIX}{A}", "-t", topic, "-v", "-C", "1", "-W", "3"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10)

    theirs = sub(device_topic(B, "assignment"))
    result = (theirs.returncode, theirs.stdout, theirs.stderr)
    assert "All subscription requests were denied." in theirs.stderr, result
    assert theirs.stdout == "", result
    own = sub(device_topic(A, "assignment"))  # control: same login, own topic
    assert own.returncode == 0 and own.stdout.strip() == f"{device_topic(A, 'assignment')} for-a", (own.returncode, own.stdout, own.stderr)
    assert "denied" not in own.stderr


def test_device_added_at_runtime_connects_and_removed_one_cannot(dynsec: Dynsec) -> None:
    pid = dynsec.broker.proc.pid if dynsec.broker.proc else None
    c_id, token = "dev-c", "dev_" + secrets.token_urlsafe(32)
    assert not dynsec.probe(c_id, token).connect(), "C connected before it was added"
    dynsec.admin.add_device(c_id, token)
    c = dynsec.probe(c_id, token)
    assert c.connect(), "C refused right after add_device"  # no reload, no polling: the command has been applied
    assert c.subscribe(device_topic(c_id, "assignment")) == [1]
    assert c.subscribe(device_topic(A, "assignment")) == [SUBACK_FAILURE]

    rotated = "dev_" + secrets.token_urlsafe(32)
    dynsec.admin.add_device(c_id, rotated)  # a known device: its token is replaced
    assert not dynsec.probe(c_id, token).connect(), "old token still accepted after rotation"
    assert dynsec.probe(c_id, rotated).connect()

    dynsec.admin.remove_device(c_id)
    assert c.pump(lambda: c.closed, timeout=3), "the removed device's live connection was kept"
    assert not dynsec.probe(c_id, rotated).connect(), "C still accepted after remove_device"
    assert c_id not in dynsec.admin.device_ids() and {A, B} <= dynsec.admin.device_ids()
    dynsec.admin.remove_device(c_id)  # idempotent
    assert dynsec.broker.proc is not None and dynsec.broker.proc.pid == pid and dynsec.broker.proc.poll() is None


def test_admin_refuses_to_touch_accounts_it_does_not_own(dynsec: Dynsec) -> None:
    with pytest.raises(DynsecError, match="reserved"):
        dynsec.admin.add_device(ADMIN_USERNAME, "x")  # would otherwise reset the admin's password
    with pytest.raises(DynsecError, match="reserved"):
        dynsec.admin.remove_device(ADMIN_USERNAME)
    with pytest.raises(BrokerError):
        dynsec.admin.add_device(SERVER_USERNAME, "x")
    with pytest.raises(BrokerError):
        dynsec.admin.add_device("a/+/#", "x")
    dynsec.admin.run({"command": "createClient", "username": "ops-console", "password": "pw"})
    try:
        with pytest.raises(DynsecError, match="does not manage"):
            dynsec.admin.add_device("ops-console", "x")
        with pytest.raises(DynsecError, match="not an edgefleet device"):
            dynsec.admin.remove_device("ops-console")
    finally:
        dynsec.admin.run({"command": "deleteClient", "username": "ops-console"})


def test_admin_account_is_limited_to_the_control_topics(dynsec: Dynsec) -> None:
    admin = dynsec.probe(ADMIN_USERNAME, dynsec.broker.admin_password, client_id="admin-probe")
    assert admin.connect()
    assert admin.subscribe("edgefleet/v1/#") == [SUBACK_FAILURE]
    admin.close()
    with pytest.raises(DynsecError, match="login refused"):
        DynsecAdmin(dynsec.broker.url, ADMIN_USERNAME, "wrong", timeout=3).connect()
    with pytest.raises(DynsecError, match="may not subscribe"):
        DynsecAdmin(dynsec.broker.url, SERVER_USERNAME, dynsec.server_password, timeout=3).connect()
