"""Broker access control for edgefleet: who may connect, and which topics each one may use.

One policy (:class:`BrokerAccess`, the rules of ``docs/protocol.md``), two brokers:

- a device logs in as username = device id, password = token; it may SUBSCRIBE to and receive
  only its own ``edgefleet/v1/devices/<id>/assignment`` and ``.../ack`` (the server's telemetry
  acknowledgement) and PUBLISH only its own ``telemetry``/``status``;
- the server logs in as :data:`SERVER_USERNAME` with a generated password and may use all of
  ``edgefleet/v1/#``; anyone else, anonymous clients included, is refused.

:class:`EmbeddedBroker` runs amqtt 0.12.1 in a thread with exactly two plugins (:class:`AuthPlugin`,
:class:`TopicACLPlugin`) that consult the live credential store on every check, so devices enrolled
after start connect without a restart; a denied SUBSCRIBE gets SUBACK 0x80. The same policy on
Mosquitto lives in :mod:`fleet_server.mqtt.mosquitto` (password + ACL files) and
:mod:`fleet_server.mqtt.dynsec` (dynamic-security plugin). Everything raised here on purpose
is a :class:`BrokerError`.

Four amqtt 0.12.1 behaviours are changed (:class:`_ACLBroker`):

- amqtt looks up, and with a clean-session CONNECT *deletes*, the session of the client id a
  CONNECT names before it authenticates the login. A device logging in as client id
  ``edgefleet-server`` was refused, yet it had already wiped the server's live session and its
  subscriptions, so the server silently stopped receiving. Here the login (password and
  client-id binding; :data:`SERVER_CLIENT_ID` is reserved for the server account) is checked
  first, and a refused CONNECT never touches the session table.
- amqtt PUBACKs a QoS 1 publish as soon as it is queued in memory. The embedded broker runs
  inside the server process, so a SIGKILL of the server took acknowledged telemetry with it
  (measured: one device's batch of 500 gone, no drop counted). With a ``sink`` (the server's
  :class:`fleet_server.mqtt.bridge.IngestQueue`) a device's own telemetry/status publish is
  handed to the sink first, and the PUBACK (PUBREC for QoS 2) goes out only when the sink calls
  back after the database commit; the device keeps the batch in its outbox until then, so
  nothing the device saw acknowledged can be lost. A full sink, or no commit within
  :data:`STORE_TIMEOUT` seconds (database down), closes the connection without an ack: the
  device reconnects and sends again, and ids make the redelivery idempotent. The server also
  publishes its application ack on the device's ``ack`` topic, as on Mosquitto, so the device
  speaks one protocol on both brokers.
- amqtt's broadcast loop iterated the subscription table while awaiting the ACL check; a
  SUBSCRIBE at that moment raised ``dictionary changed size during iteration`` and the message
  reached nobody. Here it iterates a snapshot.
- amqtt reads a packet of any announced size into memory (up to MQTT's 256 MB): measured, four
  parallel 200 MB publishes took the server from 116 MB to 1.37 GB RSS. Here every connection
  reads through :class:`_BoundedReader`, which decodes each fixed header itself and closes the
  connection, before the body is read, when the remaining length exceeds
  :data:`MAX_PACKET_BYTES`; counted in :attr:`EmbeddedBroker.oversized`. Mosquitto gets the same
  bound as ``max_packet_size``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import INCOMING, ApplicationMessage, Session
from amqtt.utils import gen_client_id

from edgefleet.protocol import SERVER_USERNAME, TOPIC_ROOT, device_topic
from fleet_server.errors import FleetError

SERVER_CLIENT_ID = "edgefleet-server"  # the bridge's client id; only the server account may use it
STORE_TIMEOUT = 60.0  # seconds a device publish may wait for its commit before the connection is closed
# Largest MQTT packet (remaining length) either broker reads; a larger one closes the connection
# before its body is read. Telemetry batches are <= 256 KiB (edgefleet.protocol.MAX_BATCH_BYTES),
# so this leaves four times that for MQTT overhead and status messages.
MAX_PACKET_BYTES = 1024 * 1024
DEVICE_CLIENT_PREFIX = "edgefleet-device-"
# Device ids end up in topics, Mosquitto's password file (``user:hash``) and its %u patterns,
# so '/', '+', '#', ':' and whitespace must never reach them.
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class BrokerError(FleetError):
    """Root error of the MQTT modules: bad ids, a broker that will not start, a failed reload.

    A :class:`~fleet_server.errors.FleetError`, so the CLI reports it as one line.
    """


Op = Action  # amqtt's SUBSCRIBE / PUBLISH / RECEIVE (checked on every delivery) enum


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` or raise, so an id can never widen a topic or break a file format."""
    if not _DEVICE_ID.fullmatch(device_id or "") or device_id == SERVER_USERNAME:
        raise BrokerError(f"device_id: {device_id!r} must match {_DEVICE_ID.pattern} and not be {SERVER_USERNAME!r}")
    return device_id



@runtime_checkable
class CredentialStore(Protocol):
    """Where device tokens live (the server's database in production). ``token_for`` runs on
    every embedded-broker connect; ``all_tokens`` only when Mosquitto's password file is rewritten."""

    def token_for(self, device_id: str) -> str | None: ...

    def all_tokens(self) -> Mapping[str, str]: ...


class InMemoryCredentials:
    """A thread-safe dict of device id → token; enough for tests and single-process setups."""

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        for device_id, token in (tokens or {}).items():
            self.set(device_id, token)

    def set(self, device_id: str, token: str) -> None:
        """Add or rotate a device's token."""
        if not token:
            raise BrokerError(f"token: empty token for device {device_id!r}")
        with self._lock:
            self._tokens[validate_device_id(device_id)] = token

    def remove(self, device_id: str) -> None:
        """Revoke a device; its next connect is refused."""
        with self._lock:
            self._tokens.pop(device_id, None)

    def token_for(self, device_id: str) -> str | None:
        with self._lock:
            return self._tokens.get(device_id)

    def all_tokens(self) -> Mapping[str, str]:
        with self._lock:
            return dict(self._tokens)


@dataclass(frozen=True)
class _CallableCredentials:
    """Adapts ``Callable[[], Mapping[str, str]]`` to :class:`CredentialStore`."""

    fn: Callable[[], Mapping[str, str]]

    def token_for(self, device_id: str) -> str | None:
        return self.fn().get(device_id)

    def all_tokens(self) -> Mapping[str, str]:
        return dict(self.fn())


PasswordCheck = Callable[[str, str], bool]


class BrokerAccess:
    """The access policy shared by both brokers.

    ``devices`` is a :class:`CredentialStore` or a callable returning the current id → token
    mapping; either is consulted live, never copied. Without ``server_password`` a random one is
    generated (no default secret); persisting it is the server's job. A ``password_check(username,
    password)`` replaces the token comparison for every account, server included, for a server
    that keeps only token hashes; Mosquitto cannot use such an access, it needs the tokens.
    """

    def __init__(self, devices: CredentialStore | Callable[[], Mapping[str, str]] | None = None,
                 server_password: str | None = None, password_check: PasswordCheck | None = None) -> None:
        if devices is None:
            devices = InMemoryCredentials()
        elif not isinstance(devices, CredentialStore):
            if not callable(devices):
                raise BrokerError("devices: expected a CredentialStore or a callable returning a mapping")
            devices = _CallableCredentials(devices)
        self.store: CredentialStore = devices
        self.server_password: str = server_password or secrets.token_urlsafe(32)
        self.password_check = password_check

    def check_password(self, username: str | None, password: str | bytes | None) -> bool:
        """True only for the server account or an enrolled device with its current token."""
        if not username or not password:
            return False  # anonymous, or a username without a password
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        if self.password_check is not None:
            return self.password_check(username, password) is True
        expected = self.server_password if username == SERVER_USERNAME else (
            self.store.token_for(username) if _DEVICE_ID.fullmatch(username) else None)
        # compare_digest keeps the check constant-time; compare bytes so non-ASCII cannot raise.
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    @staticmethod
    def allowed(username: str | None, op: Action, topic: str) -> bool:
        """The ACL; ``topic`` is a filter for SUBSCRIBE. Devices get exact topics only, so a filter
        such as ``edgefleet/v1/devices/+/assignment`` is refused rather than trimmed."""
        if username == SERVER_USERNAME:
            return topic.startswith(f"{TOPIC_ROOT}/") and topic != f"{TOPIC_ROOT}/"
        if not topic or username is None or not _DEVICE_ID.fullmatch(username):
            return False
        if op in (Op.SUBSCRIBE, Op.RECEIVE):
            return topic in (device_topic(username, "assignment"), device_topic(username, "ack"))
        return topic in (device_topic(username, "telemetry"), device_topic(username, "status"))

    @staticmethod
    def client_id_allowed(username: str | None, client_id: str | None) -> bool:
        """Bind client ids to accounts so one device cannot take over another's MQTT session:
        devices use ``edgefleet-device-<id>`` (as ``runtimes/python/transport.py`` does) or an
        empty id; the server stays out of that namespace."""
        if not client_id:
            return True
        if username == SERVER_USERNAME:
            return not client_id.startswith(DEVICE_CLIENT_PREFIX)
        if client_id == SERVER_CLIENT_ID:
            return False
        return client_id == f"{DEVICE_CLIENT_PREFIX}{username}"


# --------------------------------------------------------------------------- embedded (amqtt)

@dataclass
class _PluginConfig:
    """amqtt builds each plugin's ``Config`` from the ``plugins`` dict with dacite (strict), so
    the live BrokerAccess object is passed as an ``Any`` field rather than as file paths."""

    access: Any = None


def _access_of(plugin: BaseAuthPlugin | BaseTopicPlugin) -> BrokerAccess:
    access = plugin.config.access
    if not isinstance(access, BrokerAccess):
        raise BrokerError(f"{type(plugin).__name__}: plugin config 'access' must be a BrokerAccess, got {access!r}")
    return access


class AuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: password and client-id check against the live :class:`BrokerAccess`."""

    Config = _PluginConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.access = _access_of(self)

    async def authenticate(self, *, session: Session) -> bool:
        try:
            ok = self.access.check_password(session.username, session.password)
        except Exception:  # a failing credential lookup (database down) must refuse, not crash amqtt
            self.context.logger.exception("credential check failed for username=%r", session.username)
            return False
        ok = ok and self.access.client_id_allowed(session.username, session.client_id)
        if not ok:
            self.context.logger.info("refused MQTT login: username=%r client_id=%r", session.username, session.client_id)
        return ok


class TopicACLPlugin(BaseTopicPlugin):
    """amqtt topic plugin: :meth:`BrokerAccess.allowed` for subscribe, publish and receive."""

    Config = _PluginConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.access = _access_of(self)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or topic is None or action is None:
            return False
        return self.access.allowed(session.username, action, topic)


@runtime_checkable
class IngestSink(Protocol):
    """Where the embedded broker hands a device's telemetry/status publish before acknowledging
    it: ``submit`` queues it (False when full) and calls ``ack()``, from any thread, once stored
    or rejected for good. :class:`fleet_server.mqtt.bridge.IngestQueue` is the server's sink."""

    def submit(self, topic: str, payload: bytes, ack: Callable[[], None]) -> bool: ...


def _ingest_topic(username: str | None, topic: str) -> bool:
    """A device's own telemetry or status topic (what the server stores)."""
    return bool(username) and username != SERVER_USERNAME and topic in (
        device_topic(str(username), "telemetry"), device_topic(str(username), "status"))


class _StoreFirstHandler(BrokerProtocolHandler):
    """A connection handler that stores a device's telemetry/status before acknowledging it.

    amqtt's own flow queues an incoming publish and acknowledges it at once; here the message
    goes to the sink first and amqtt's flow (queue for subscribers, PUBACK/PUBREC) runs only
    after the sink's ack, i.e. after the commit."""

    sink: IngestSink | None = None

    async def _handle_message_flow(self, app_message: Any) -> None:
        session = self.session
        if (self.sink is not None and session is not None and app_message.direction == INCOMING
                and _ingest_topic(session.username, app_message.topic)):
            if not await self._store_first(app_message):
                return
        await super()._handle_message_flow(app_message)

    async def _store_first(self, app_message: ApplicationMessage) -> bool:
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            if not stored.done():
                stored.set_result(None)

        def ack() -> None:  # called by the sink's worker thread after the commit
            try:
                loop.call_soon_threadsafe(done)
            except RuntimeError:  # the broker's loop is gone (shutdown): the device sends again
                pass

        assert self.sink is not None
        if not self.sink.submit(app_message.topic, bytes(app_message.data), ack):
            self.logger.warning("ingest queue full: closing %s without acknowledging", self.session and self.session.client_id)
            await self._close_unacknowledged()
            return False
        if app_message.qos == 0:
            return True  # nothing to acknowledge
        try:
            await asyncio.wait_for(asyncio.shield(stored), STORE_TIMEOUT)
        except asyncio.TimeoutError:
            self.logger.warning("no commit within %s s: closing %s without acknowledging", STORE_TIMEOUT,
                                self.session and self.session.client_id)
            await self._close_unacknowledged()
            return False
        return True

    async def _close_unacknowledged(self) -> None:
        await asyncio.sleep(1.0)  # a pause, so a device does not resend in a tight loop
        await self.handle_connection_closed()


class PacketTooLarge(BrokerError):
    """A client announced an MQTT packet larger than :data:`MAX_PACKET_BYTES`."""


class _BoundedReader(ReaderAdapter):
    """A reader that follows MQTT framing itself and refuses a packet whose remaining length
    exceeds ``limit`` as soon as that length is decoded, i.e. before amqtt asks for the body.

    Every byte amqtt reads passes through here, so the fixed header (one type byte, then 1 to 4
    remaining-length bytes with a continuation bit) can be tracked without trusting amqtt's call
    pattern. Once a packet is refused, every further read raises too. :class:`PacketTooLarge` is
    not one of the errors amqtt's reader loop swallows, so the loop ends and closes the socket."""

    def __init__(self, inner: ReaderAdapter, limit: int, on_oversized: Callable[[int], None] | None = None) -> None:
        self._inner = inner
        self.limit = limit
        self._on_oversized = on_oversized
        self._state = 0  # 0: type byte next, 1: remaining-length bytes, 2: body
        self._length = 0
        self._multiplier = 1
        self._body_left = 0
        self.refused: int | None = None  # the refused remaining length

    async def read(self, n: int = -1) -> bytes:
        if self.refused is not None:
            raise PacketTooLarge(f"packet: connection already refused ({self.refused} bytes > {self.limit})")
        if n < 0:  # read-to-EOF is unbounded; amqtt never asks for it
            raise PacketTooLarge("packet: unbounded read refused")
        data: bytes = await self._inner.read(n)
        self._follow(data)
        return data

    def _follow(self, data: bytes) -> None:
        i, end = 0, len(data)
        while i < end:
            if self._state == 2:
                step = min(self._body_left, end - i)
                self._body_left -= step
                i += step
                if self._body_left == 0:
                    self._state = 0
                continue
            byte = data[i]
            i += 1
            if self._state == 0:
                self._state, self._length, self._multiplier = 1, 0, 1
                continue
            self._length += (byte & 0x7F) * self._multiplier
            if byte & 0x80:
                self._multiplier *= 128
                if self._multiplier > 128 ** 3:  # more than 4 length bytes: malformed
                    self._refuse(self._length)
                continue
            if self._length > self.limit:
                self._refuse(self._length)
            self._body_left = self._length
            self._state = 2 if self._length else 0

    def _refuse(self, length: int) -> None:
        self.refused = length
        if self._on_oversized is not None:
            self._on_oversized(length)
        raise PacketTooLarge(f"packet: remaining length {length} exceeds the limit of {self.limit} bytes")

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class _ACLBroker(Broker):
    """amqtt's Broker with four changes.

    - A retained-message leak closed. On every connect amqtt 0.12.1 pushes the retained messages
      of *every* filter *any* session subscribed to, unchecked: measured, device A received B's
      retained assignment without subscribing. Here the session must hold the subscription and
      pass the RECEIVE check for each retained topic.
    - Authentication before the session lookup (see the module docstring), so a refused login
      can neither delete nor take over anyone's session.
    - With :attr:`sink`, connection handlers are :class:`_StoreFirstHandler`: acknowledged means
      stored.
    - Every TCP connection reads through :class:`_BoundedReader` (:attr:`max_packet_bytes`).
    """

    sink: IngestSink | None = None
    max_packet_bytes: int = MAX_PACKET_BYTES
    on_oversized: Callable[[int], None] | None = None

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str) -> None:
        bounded = _BoundedReader(StreamReaderAdapter(reader), self.max_packet_bytes, self.on_oversized)
        await self._client_connected(listener_name, bounded, StreamWriterAdapter(writer))

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        # amqtt 0.12.1's method, reordered: authenticate the CONNECT, then look the session up.
        try:
            handler, incoming = await _StoreFirstHandler.init_from_connect(reader, writer, self.plugins_manager)
        except PacketTooLarge as exc:  # an oversized CONNECT: amqtt only handles its own errors here
            await writer.close()
            raise AMQTTError(str(exc)) from exc
        except AMQTTError as exc:
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            raise AMQTTError(exc) from exc
        handler.sink = self.sink
        if not await self._authenticate(incoming, None):  # the listener argument is unused
            self.logger.info("refused CONNECT before session lookup: username=%r client_id=%r",
                             incoming.username, incoming.client_id)
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"refused login for client id {incoming.client_id!r}")

        client_session = incoming
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
        elif incoming.client_id in self._sessions:
            existing, _ = self._sessions[incoming.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username", "password"):
                setattr(existing, name, getattr(incoming, name))
            client_session = existing
            client_session.parent = 1
        else:
            incoming.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if client_session.keep_alive > 0 and isinstance(delay, int):
            client_session.keep_alive += delay
        return handler, client_session

    async def _run_broadcast(self, running_tasks: Any) -> None:
        """amqtt 0.12.1's method over a snapshot of the subscriptions: the original iterates
        ``self._subscriptions`` while awaiting the ACL check, so a concurrent SUBSCRIBE raised
        ``RuntimeError: dictionary changed size during iteration`` and the message reached no
        subscriber although its publisher had been acknowledged."""
        broadcast = await self._broadcast_queue.get()
        for k_filter, subscriptions in list(self._subscriptions.items()):
            if not self._matches(broadcast["topic"], k_filter):
                continue
            for target_session, sub_qos in list(subscriptions):
                qos = broadcast.get("qos", sub_qos)
                if not await self._topic_filtering(target_session, topic=broadcast["topic"], action=Action.RECEIVE):
                    continue
                if (target_session.transitions.state != "connected" and not target_session.clean_session
                        and qos in (QOS_1, QOS_2) and not target_session.is_anonymous):
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                if target_session.transitions.state != "connected":
                    continue
                handler = self._get_handler(target_session)
                if handler:
                    running_tasks.append(asyncio.ensure_future(
                        handler.mqtt_publish(broadcast["topic"], broadcast["data"], qos, retain=False)))

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Session) -> None:
        topic_filter, qos = subscription
        if not any(s is session for s, _ in self._subscriptions.get(topic_filter, [])):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = [
            asyncio.ensure_future(handler.mqtt_publish(msg.topic, msg.data, min(qos, msg.qos or qos), retain=True))
            for topic, msg in list(self._retained_messages.items())
            if self._matches(topic, topic_filter) and await self._topic_filtering(session, topic, Action.RECEIVE)
        ]
        if tasks:
            await asyncio.wait(tasks)


def _check_amqtt_internals() -> None:
    """The overrides above replace amqtt 0.12.1 internals; refuse to run on an amqtt without them
    rather than silently losing the store-before-ack and authenticate-first guarantees."""
    for owner, name in ((Broker, "_initialize_client_session"), (Broker, "_authenticate"), (Broker, "_delete_session"),
                        (Broker, "_publish_retained_messages_for_subscription"), (Broker, "_run_broadcast"),
                        (Broker, "_retain_broadcast_message"), (Broker, "_get_handler"),
                        (Broker, "stream_connected"), (Broker, "_client_connected"),
                        (BrokerProtocolHandler, "_handle_message_flow"), (BrokerProtocolHandler, "init_from_connect")):
        if not callable(getattr(owner, name, None)):
            raise BrokerError(f"amqtt: {owner.__name__}.{name} is missing; the embedded broker is written for amqtt 0.12.1")


class EmbeddedBroker:
    """amqtt on loopback in its own thread and event loop, so a sync Flask server can host it.

    ``access`` is a :class:`BrokerAccess` or just a ``password_check(username, password)``.
    ``port=0`` picks a free port; read it from :attr:`port` or :attr:`url` after :meth:`start`.
    ``sink`` (an :class:`IngestSink`): devices' telemetry and status are acknowledged only once
    the sink has stored them; without it amqtt acknowledges on receipt (plain broker tests).
    Only the two ACL plugins are loaded: amqtt's default set (event/packet loggers, anonymous
    auth, $SYS) would allow anonymous clients and costs about a third of throughput.
    A client announcing a packet larger than ``max_packet_bytes`` is disconnected before the
    packet's body is read; :attr:`oversized` counts those, and ``on_oversized(length)``, if
    given, is called on the broker's thread for each (it must not block).
    """

    def __init__(self, access: BrokerAccess | PasswordCheck, host: str = "127.0.0.1", port: int = 0,
                 sink: IngestSink | None = None, max_packet_bytes: int = MAX_PACKET_BYTES,
                 on_oversized: Callable[[int], None] | None = None) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise BrokerError(f"host: the embedded broker binds loopback only, not {host!r}")
        _check_amqtt_internals()
        if not isinstance(access, BrokerAccess):
            if not callable(access):
                raise BrokerError("access: expected a BrokerAccess or a password_check(username, password) callable")
            access = BrokerAccess(password_check=access)
        if sink is not None and not isinstance(sink, IngestSink):
            raise BrokerError("sink: expected an object with submit(topic, payload, ack) -> bool")
        self.access = access
        self.host = host
        self.port = port
        self.sink = sink
        if not isinstance(max_packet_bytes, int) or max_packet_bytes < 64:
            raise BrokerError(f"max_packet_bytes: expected an integer >= 64, got {max_packet_bytes!r}")
        self.max_packet_bytes = max_packet_bytes
        self.on_oversized = on_oversized
        self.oversized = 0  # connections closed for an oversized packet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: _ACLBroker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Start the broker thread and return once the listener accepts connections."""
        if self._thread is not None:
            raise BrokerError("embedded broker already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        plugin_cfg = {"access": self.access}
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {f"{__name__}.AuthPlugin": plugin_cfg, f"{__name__}.TopicACLPlugin": plugin_cfg},
        }

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._broker = _ACLBroker(config, loop=loop)
                self._broker.sink = self.sink
                self._broker.max_packet_bytes = self.max_packet_bytes
                self._broker.on_oversized = self._count_oversized
                loop.run_until_complete(self._broker.start())
                # amqtt keeps its listening sockets private; this is the only way to learn port 0.
                server = self._broker._servers["default"].instance
                self.port = int(server.sockets[0].getsockname()[1])
            except BaseException as exc:  # reported to start(), which raises BrokerError
                failure.append(exc)
            ready.set()
            if not failure:
                loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"amqtt-{self.host}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise BrokerError(f"embedded broker did not start within {timeout} s")
        if failure:
            self._thread = None
            raise BrokerError(f"embedded broker failed to start on {self.host}:{self.port}: {failure[0]}") from failure[0]
        return self

    def _count_oversized(self, length: int) -> None:
        self.oversized += 1  # only the broker's thread writes it
        logging.getLogger(__name__).warning("closed an MQTT connection announcing a %d-byte packet (limit %d)",
                                            length, self.max_packet_bytes)
        if self.on_oversized is not None:
            try:
                self.on_oversized(length)
            except Exception:  # a failing counter must not keep the connection open
                logging.getLogger(__name__).exception("on_oversized failed")

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the broker down and join its thread; safe to call twice."""
        loop, thread, broker = self._loop, self._thread, self._broker
        if loop is None or thread is None or broker is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._loop = self._thread = self._broker = None


# --------------------------------------------------------------------------- Mosquitto
