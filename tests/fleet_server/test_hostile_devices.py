"""Hostile devices (issue 10): one enrolled device misbehaving on MQTT never stops ingest for the fleet.

Every test runs on both stacks, real parts only: the embedded amqtt broker + SQLite, and
Mosquitto (dynamic security, accounts made by the server) + PostgreSQL. A hostile device ("bad")
sends malformed status, oversized or garbage telemetry, a poison row the database refuses, or
logs in under the server's reserved client id; each test then shows that another device's
("good") telemetry is stored within 5 s and that the bad messages were counted, and nothing
else. The restart test shows no poison message stays stuck in a persistent session.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from edgefleet.protocol import SERVER_PING_PREFIX as PING_PREFIX
from edgefleet.protocol import SERVER_USERNAME, device_topic
from fleet_server.core import ServerConfig
from fleet_server.db import Counter, TelemetryRecord
from fleet_server.mqtt.bridge import IngestQueue
from fleet_server.mqtt.dynsec import DynsecBroker
from fleet_server.serve import FleetServer
from tests.fleet_server.conftest import Api, enroll, wait_for
from tests.fleet_server.test_broker_acl import Probe

pytestmark = pytest.mark.timeout(120)

STORED_WITHIN = 5.0  # seconds: the issue's bound for "other devices' telemetry is still stored"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "mosquitto_sub"  # `make test` installs mosquitto-clients
REJECTIONS = ("status_rejected", "telemetry_rejected", "telemetry_oversized", "mqtt_rejected")


def batch(device_id: str, n: int = 3, **body: Any) -> tuple[list[str], bytes]:
    ids = [uuid.uuid4().hex for _ in range(n)]
    msgs = [{"id": i, "kind": "prediction", "created": time.time(),
             "body": {"model": "churn", "model_version": 1, "score": 0.25, "label": 0, "entity_id": f"E{k}", **body}}
            for k, i in enumerate(ids)]
    return ids, json.dumps({"device_id": device_id, "messages": msgs}).encode()


@dataclass
class Stack:
    kind: str
    make: Callable[[], FleetServer]
    server: FleetServer
    broker: DynsecBroker | None
    creds: dict[str, dict[str, Any]] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.broker.port if self.broker else self.server.broker.port

    def restart_server(self) -> None:
        for p in self.probes:
            p.close()
        self.probes.clear()
        self.server.stop()
        self.server = self.make()

    def device(self, name: str, client_id: str | None = None, username: str | None = None) -> Probe:
        cred = self.creds[name]
        p = Probe(self.port, username or cred["device_id"], cred["token"],
                  client_id if client_id is not None else f"edgefleet-device-{cred['device_id']}")
        self.probes.append(p)
        return p

    def connected(self, name: str) -> Probe:
        p = self.device(name)
        assert p.connect(), f"{self.kind}: {name} could not connect"
        return p

    def counters(self) -> dict[str, int]:
        with self.server.fleet.session() as s:
            return {c.name: c.value for c in s.scalars(select(Counter))}

    def rejections(self) -> int:
        c = self.counters()
        return sum(c.get(n, 0) for n in REJECTIONS)

    def stored(self, ids: list[str]) -> set[str]:
        with self.server.fleet.session() as s:
            return set(s.scalars(select(TelemetryRecord.id).where(TelemetryRecord.id.in_(ids))))

    def assert_good_device_still_stored(self, what: str) -> None:
        """The good device's telemetry, sent now, is in the database within 5 s."""
        good = self.connected("good")
        ids, payload = batch(self.creds["good"]["device_id"])
        t0 = time.monotonic()
        good.publish(device_topic(self.creds["good"]["device_id"], "telemetry"), payload)
        wait_for(lambda: self.stored(ids) == set(ids), timeout=STORED_WITHIN, every=0.05,
                 what=f"{self.kind}: good device's telemetry stored after {what}")
        assert time.monotonic() - t0 <= STORED_WITHIN + 0.5
        good.close()


def _server(tmp_path: Path, keypair: dict[str, Any], **kw: Any) -> Callable[[], FleetServer]:
    def make() -> FleetServer:
        cfg = ServerConfig(data_dir=tmp_path / "fleet", trust_keys=[keypair["public_path"]], port=0, reconcile_seconds=0.5, **kw)
        return FleetServer(cfg).start()
    return make


@pytest.fixture(params=["embedded+sqlite", "mosquitto+postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, keypair: dict[str, Any]) -> Iterator[Stack]:
    broker = None
    if request.param == "embedded+sqlite":
        make = _server(tmp_path, keypair, embedded_broker=True, embedded_mqtt_port=0)
    else:
        pg = request.getfixturevalue("fresh_pg")
        broker = DynsecBroker(tmp_path / "mosq").start()
        make = _server(tmp_path, keypair, db_url=pg, mqtt_url=broker.url, mqtt_admin=(broker.admin_user, broker.admin_password))
    st = Stack(request.param, make, make(), broker)
    try:
        api = Api(st.server)
        for name in ("good", "bad"):
            st.creds[name] = enroll(api, f"{name}-{secrets.token_hex(3)}")
        wait_for(lambda: st.server.bridge.connected.is_set(), timeout=10, what="bridge connected")
        yield st
    finally:
        for p in st.probes:
            p.close()
        st.server.stop()
        if broker is not None:
            broker.stop()


def bad_statuses() -> list[bytes]:
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        b'{"active_model":{"x":1},"active_version":1}',       # the reproduction
        b"this is not json",
        deep,                                                 # RecursionError in json.loads
        b'{"active_model":"churn","active_version":' + str(2 ** 70).encode() + b"}",
        b"\xff\xfe\x00garbage",                               # not UTF-8
        b'{"health":"\\ud800"}',                               # a lone surrogate
        b"[1,2,3]",
    ]


def test_malformed_status_does_not_stop_ingest(stack: Stack) -> None:
    before = stack.counters().get("status_rejected", 0)
    bad = stack.connected("bad")
    topic = device_topic(stack.creds["bad"]["device_id"], "status")
    payloads = bad_statuses()
    for payload in payloads:
        bad.publish(topic, payload, retain=True)
    wait_for(lambda: stack.counters().get("status_rejected", 0) - before >= len(payloads), timeout=10,
             what=f"{stack.kind}: every bad status counted")
    stack.assert_good_device_still_stored("malformed statuses")
    assert stack.counters().get("status_rejected", 0) - before == len(payloads)
    # A good status from the same device is still recorded.
    bad.publish(topic, json.dumps({"active_model": "churn", "active_version": 1, "health": "ok"}).encode())
    api = Api(stack.server)
    wait_for(lambda: api("GET", f"/api/v1/devices/{stack.creds['bad']['device_id']}")[1].get("health") == "ok",
             timeout=STORED_WITHIN, what="the bad device's next valid status recorded")


def test_oversized_and_garbage_telemetry_are_counted_and_do_not_block(stack: Stack) -> None:
    before = stack.counters()
    bad_id = stack.creds["bad"]["device_id"]
    bad = stack.connected("bad")
    topic = device_topic(bad_id, "telemetry")
    # A batch over the server's max_telemetry_bytes (4 MiB) is now larger than the brokers'
    # MAX_PACKET_BYTES and so refused by the broker with a disconnect; see test_packet_limits.py.
    garbage = [b"\x00\x01\x02\xff", b"null", b"[]", b'{"messages": 5}', b"{" * 50_000,
               b'{"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
               json.dumps({"device_id": "someone-else", "messages": []}).encode()]
    for g in garbage:
        bad.publish(topic, g)
    # Garbage on topics the device does not own is refused by the broker, never stored.
    bad.publish(device_topic(bad_id, "assignment"), b"self-assigned")
    bad.publish(f"{PING_PREFIX}{secrets.token_hex(8)}", b"fake ping")
    bad.publish(device_topic(stack.creds["good"]["device_id"], "telemetry"), batch(bad_id)[1])

    def counted() -> tuple[int, int]:
        c = stack.counters()
        return c.get("telemetry_oversized", 0) - before.get("telemetry_oversized", 0), \
            c.get("telemetry_rejected", 0) - before.get("telemetry_rejected", 0)

    wait_for(lambda: counted() == (0, len(garbage)), timeout=15, what=f"{stack.kind}: oversized and garbage batches counted")
    stack.assert_good_device_still_stored("oversized and garbage telemetry")
    assert counted() == (0, len(garbage))
    with stack.server.fleet.session() as s:
        assert s.scalar(select(TelemetryRecord.id).where(TelemetryRecord.device_id == bad_id).limit(1)) is None


def _poison_trigger(server: FleetServer) -> None:
    """A real statement failure for one row: the database itself refuses entity_id 'poison'."""
    with server.fleet.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN IF NEW.entity_id = 'poison' "
                              "THEN RAISE EXCEPTION 'poison row'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER poison BEFORE INSERT ON telemetry FOR EACH ROW EXECUTE FUNCTION poison()"))
        else:
            conn.execute(text("CREATE TRIGGER poison BEFORE INSERT ON telemetry WHEN NEW.entity_id = 'poison' "
                              "BEGIN SELECT RAISE(ABORT, 'poison row'); END"))


def test_a_row_the_database_refuses_is_that_messages_rejection(stack: Stack) -> None:
    """Item 1's cause: a statement failure used to be taken for 'database down' and the group
    requeued forever. Now the message is rejected (counted, acknowledged), the fleet goes on."""
    _poison_trigger(stack.server)
    before = stack.counters().get("telemetry_rejected", 0)
    bad_id = stack.creds["bad"]["device_id"]
    bad = stack.connected("bad")
    ids, poison = batch(bad_id, n=5)
    poison = poison.replace(b'"E2"', b'"poison"')
    bad.publish(device_topic(bad_id, "telemetry"), poison)
    assert not bad.closed
    wait_for(lambda: stack.counters().get("telemetry_rejected", 0) - before == 1, timeout=10,
             what=f"{stack.kind}: the poison batch counted as rejected")
    assert stack.stored(ids) == set()  # the batch is one message: refused as a whole, no partial rows
    stack.assert_good_device_still_stored("a poison row")
    assert "poison row" in (stack.server.bridge.last_error or "")


def test_reserved_server_client_id_and_username_are_refused_and_harmless(stack: Stack) -> None:
    """Item 3: a device logging in as client id or username ``edgefleet-server`` is refused,
    and the server's session is not disturbed (the bridge keeps receiving without reconnecting)."""
    bridge = stack.server.bridge
    assert bridge.ping_once(), f"{stack.kind}: the bridge's own ping did not come back before the test"
    reconnects = bridge.reconnects
    # mosquitto_sub -i edgefleet-server (clean session), and a persistent-session variant.
    assert not stack.device("bad", client_id="edgefleet-server").connect()
    p = stack.device("bad", client_id="edgefleet-server")
    p.client._clean_session = False
    assert not p.connect()
    assert not stack.device("bad", client_id="edgefleet-server", username=SERVER_USERNAME).connect()
    assert not stack.device("bad", client_id="", username=SERVER_USERNAME).connect()
    # The reproduction, with the real Mosquitto client.
    bad = stack.creds["bad"]
    r = subprocess.run([MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(stack.port), "-u", bad["device_id"], "-P", bad["token"],
                        "-i", "edgefleet-server", "-t", device_topic(bad["device_id"], "assignment"), "-C", "1", "-W", "3"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "refused" in (r.stdout + r.stderr).lower(), (r.returncode, r.stdout, r.stderr)
    time.sleep(0.3)
    assert bridge.ping_once(), f"{stack.kind}: the server's subscription died after the refused logins"
    assert bridge.reconnects == reconnects, "the bridge had to reconnect: its session was disturbed"
    stack.assert_good_device_still_stored("logins with the reserved client id")


def test_dead_subscription_is_detected_and_resubscribed(stack: Stack) -> None:
    """If the broker silently drops the server's subscriptions, the self-ping notices and the
    bridge reconnects and subscribes again."""
    bridge = stack.server.bridge
    reconnects = bridge.reconnects
    bridge.client.unsubscribe([f"{PING_PREFIX}+", "edgefleet/v1/devices/+/telemetry", "edgefleet/v1/devices/+/status"])
    bridge.ping_timeout, bridge.ping_seconds = 1.0, 0.5
    wait_for(lambda: bridge.reconnects > reconnects and bridge.connected.is_set(), timeout=10,
             what=f"{stack.kind}: bridge reconnect after its own ping was lost")
    wait_for(bridge.ping_once, timeout=5, what="ping received after the resubscribe")
    stack.assert_good_device_still_stored("a dead subscription")


def test_poison_does_not_survive_a_restart(stack: Stack) -> None:
    """The bad messages were acknowledged, so nothing is redelivered from a persistent session
    after a server restart (and, on Mosquitto, a broker restart too)."""
    bad_id = stack.creds["bad"]["device_id"]
    bad = stack.connected("bad")
    for payload in bad_statuses()[:3]:
        bad.publish(device_topic(bad_id, "status"), payload, retain=True)
    bad.publish(device_topic(bad_id, "telemetry"), b"\x00garbage")
    wait_for(lambda: stack.counters().get("status_rejected", 0) >= 3 and stack.counters().get("telemetry_rejected", 0) >= 1,
             timeout=10, what="bad messages counted")
    counted = stack.rejections()
    stack.restart_server()
    if stack.broker is not None:
        stack.broker.stop()
        stack.broker.start()
        wait_for(lambda: stack.server.bridge.connected.is_set(), timeout=15, what="bridge reconnected to the restarted broker")
    stack.assert_good_device_still_stored("a restart")
    time.sleep(1.0)  # a redelivered poison message would be counted again by now
    assert stack.rejections() == counted, f"{stack.kind}: a bad message was redelivered after the restart"


# --------------------------------------------------------------------------- the ingest queue itself

@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_ingest_group_with_one_poison_row_acks_every_stored_message(backend: str, tmp_path: Path, keypair: dict[str, Any],
                                                                  request: pytest.FixtureRequest) -> None:
    """One group, three batches, the middle one refused by the database: the other two are
    stored and acknowledged (the old fallback never acked them), the poison one is counted and
    acknowledged, nothing is left queued."""
    from fleet_server import devices
    from fleet_server.core import Fleet

    db_url = request.getfixturevalue("fresh_pg") if backend == "postgresql" else None
    fleet = Fleet(ServerConfig(data_dir=tmp_path / "fleet", db_url=db_url, trust_keys=[keypair["public_path"]], embedded_broker=False))
    try:
        token = devices.create_enrollment_token(fleet)
        dev = devices.enroll(fleet, token, "dev-q")["device_id"]
        server = type("S", (), {"fleet": fleet})()
        _poison_trigger(server)  # type: ignore[arg-type]
        q = IngestQueue(fleet)
        acked: list[int] = []
        ids0, b0 = batch(dev)
        ids1, b1 = batch(dev)
        ids2, b2 = batch(dev)
        b1 = b1.replace(b'"E1"', b'"poison"')
        for k, payload in enumerate((b0, b1, b2)):
            assert q.submit(device_topic(dev, "telemetry"), payload, lambda k=k: acked.append(k))
        q.start()
        wait_for(lambda: len(acked) == 3, timeout=10, what="all three acknowledged")
        q.stop()
        assert sorted(acked) == [0, 1, 2]
        with fleet.session() as s:
            got = set(s.scalars(select(TelemetryRecord.id)))
            rejected = s.get(Counter, "telemetry_rejected")
        assert got == set(ids0) | set(ids2)
        assert rejected is not None and rejected.value == 1
        assert q.queue.empty() and q.queued_bytes == 0
    finally:
        fleet.engine.dispose()


def test_database_down_keeps_messages_unacknowledged_then_stores_all(tmp_path: Path, keypair: dict[str, Any], fresh_pg: str) -> None:
    """The other side of item 1: when the connection fails (PostgreSQL refuses connections and
    the open ones are terminated) nothing is rejected or acknowledged; once it is back every
    message is stored and acknowledged."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from fleet_server import devices
    from fleet_server.core import Fleet

    fleet = Fleet(ServerConfig(data_dir=tmp_path / "fleet", db_url=fresh_pg, trust_keys=[keypair["public_path"]], embedded_broker=False))
    url = make_url(fresh_pg)
    admin = create_engine(url.set(drivername="postgresql+psycopg", database="postgres"), isolation_level="AUTOCOMMIT")
    dbname = url.database

    def allow(on: bool) -> None:
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS {"true" if on else "false"}'))
            if not on:
                c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                          {"d": dbname})

    q = IngestQueue(fleet).start()
    try:
        dev = devices.enroll(fleet, devices.create_enrollment_token(fleet), "dev-down")["device_id"]
        acked: list[int] = []
        first_ids, first = batch(dev)
        assert q.submit(device_topic(dev, "telemetry"), first, lambda: acked.append(0))
        wait_for(lambda: acked == [0], timeout=5, what="stored while the database is up")
        allow(False)
        ids: list[str] = []
        for k in range(1, 6):
            more, payload = batch(dev)
            ids += more
            assert q.submit(device_topic(dev, "telemetry"), payload, lambda k=k: acked.append(k))
        status = json.dumps({"active_model": "churn", "active_version": 1, "health": "ok"}).encode()
        assert q.submit(device_topic(dev, "status"), status, lambda: acked.append(6))
        wait_for(lambda: q.database_down, timeout=10, what="the outage noticed")
        time.sleep(1.5)
        assert acked == [0], "something was acknowledged while the database was down"
        assert "database" in (q.last_error or "")
        allow(True)
        wait_for(lambda: sorted(acked) == list(range(7)), timeout=40, what="every message acknowledged after the outage")
        with fleet.session() as s:
            got = set(s.scalars(select(TelemetryRecord.id)))
            counts = {c.name: c.value for c in s.scalars(select(Counter))}
        assert got == set(first_ids) | set(ids)
        assert not any(counts.get(n) for n in REJECTIONS), counts
        assert not q.database_down
    finally:
        allow(True)
        q.stop()
        admin.dispose()
        fleet.engine.dispose()


def test_embedded_refused_login_leaves_every_session_alone() -> None:
    """amqtt 0.12.1 deleted the session a clean-session CONNECT named *before* authenticating it.
    A refused login under another account's client id (the server's, or another device's) must
    leave that session, and its subscriptions, working."""
    from fleet_server.mqtt.broker import BrokerAccess, EmbeddedBroker, InMemoryCredentials

    tokens = {"dev-a": "token-a-0123456789", "dev-b": "token-b-0123456789"}
    access = BrokerAccess(InMemoryCredentials(tokens))
    embedded = EmbeddedBroker(access).start()
    probes: list[Probe] = []
    try:
        b = Probe(embedded.port, "dev-b", tokens["dev-b"], "edgefleet-device-dev-b")
        server = Probe(embedded.port, SERVER_USERNAME, access.server_password, "edgefleet-server")
        probes += [b, server]
        assert b.connect() and server.connect()
        assert b.subscribe(device_topic("dev-b", "assignment")) == [1]
        assert server.subscribe("edgefleet/v1/devices/+/telemetry") == [1]
        for client_id in ("edgefleet-server", "edgefleet-device-dev-b"):
            for user, password in (("dev-a", tokens["dev-a"]), ("dev-a", "wrong"), (SERVER_USERNAME, "wrong")):
                assert not Probe(embedded.port, user, password, client_id).connect(), (client_id, user)
        server.publish(device_topic("dev-b", "assignment"), b"for-b")
        assert b.wait_for(device_topic("dev-b", "assignment")), "dev-b's session lost its subscription"
        b.publish(device_topic("dev-b", "telemetry"), b"from-b")
        assert server.wait_for(device_topic("dev-b", "telemetry")), "the server's session lost its subscription"
        assert not b.closed and not server.closed
    finally:
        for p in probes:
            p.close()
        embedded.stop()


def test_ingest_queue_full_refuses_without_ack_and_counts(tmp_path: Path, keypair: dict[str, Any]) -> None:
    """The byte bound: a message that does not fit is refused (the caller does not ack it, the
    device resends later) and counted by the worker, with no database call on the caller's thread."""
    from fleet_server import devices
    from fleet_server.core import Fleet

    fleet = Fleet(ServerConfig(data_dir=tmp_path / "fleet", trust_keys=[keypair["public_path"]], embedded_broker=False))
    try:
        dev = devices.enroll(fleet, devices.create_enrollment_token(fleet), "dev-full")["device_id"]
        ids, payload = batch(dev)
        q = IngestQueue(fleet, max_queued_bytes=len(payload) + 10)
        acked: list[int] = []
        assert q.submit(device_topic(dev, "telemetry"), payload, lambda: acked.append(1))
        assert not q.submit(device_topic(dev, "telemetry"), batch(dev)[1], lambda: acked.append(2))
        q.start()
        wait_for(lambda: acked == [1], timeout=5, what="the queued message stored")
        q.stop()
        with fleet.session() as s:
            full = s.get(Counter, "mqtt_queue_full")
            got = set(s.scalars(select(TelemetryRecord.id)))
        assert full is not None and full.value == 1 and got == set(ids) and q.queued_bytes == 0
    finally:
        fleet.engine.dispose()


def test_password_file_mosquitto_device_cannot_take_the_servers_client_id(tmp_path: Path) -> None:
    """Mosquitto with password/ACL files cannot bind client ids to accounts, so it forces each
    client id to the username (``use_username_as_clientid``): a device saying ``-i
    edgefleet-server`` gets its own id and cannot kick the server off its session."""
    from fleet_server.mqtt.broker import BrokerAccess, InMemoryCredentials
    from fleet_server.mqtt.mosquitto import MosquittoAccess, MosquittoBroker

    tokens = {"dev-a": "token-a-0123456789"}
    access = BrokerAccess(InMemoryCredentials(tokens))
    mosq = MosquittoBroker(MosquittoAccess(tmp_path / "mosquitto", access)).start()
    probes: list[Probe] = []
    try:
        server = Probe(mosq.port, SERVER_USERNAME, access.server_password, "edgefleet-server")
        probes.append(server)
        assert server.connect()
        assert server.subscribe("edgefleet/v1/devices/+/telemetry") == [1]
        for clean in (True, False):
            a = Probe(mosq.port, "dev-a", tokens["dev-a"], "edgefleet-server")
            a.client._clean_session = clean
            probes.append(a)
            a.connect()
            server.settle(0.5)
            assert not server.closed, "a device's login under client id edgefleet-server disconnected the server"
            if not a.closed:
                a.publish(device_topic("dev-a", "telemetry"), b"from-a")
                assert server.wait_for(device_topic("dev-a", "telemetry")), "the server stopped receiving"
                server.messages.clear()
            a.close()
    finally:
        for p in probes:
            p.close()
        mosq.stop()
