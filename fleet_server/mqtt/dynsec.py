"""Mosquitto's dynamic-security plugin, managed by the fleet server: refused SUBSCRIBEs.

Mosquitto 2.0.11's ``acl_file`` grants every SUBSCRIBE and only withholds delivery
(``fleet_server/mqtt/broker.py``, ``fleet_server/mqtt/mosquitto.py``), so ``mosquitto_sub`` with device A's login on device B's topic is
not *refused*. The dynamic-security plugin checks subscriptions (``subscribeLiteral`` /
``subscribePattern``) and answers SUBACK 0x80, which ``mosquitto_sub`` reports as "All
subscription requests were denied." It is also managed live over MQTT, so enrolling or removing a
device needs no file rewrite and no restart.

- :func:`initial_config` / :func:`write_initial_config` make the plugin's JSON file: one admin
  client that may only use ``$CONTROL/dynamic-security/#`` (``mosquitto_ctrl dynsec init`` would
  also let it read ``#``) and default ACL access denying publish, receive and subscribe.
  Passwords use the plugin's format: base64 PBKDF2-HMAC-SHA512 (64 bytes), base64 12-byte salt,
  ``iterations``; checked here against what ``mosquitto_ctrl dynsec init`` writes.
- :class:`DynsecAdmin` is a paho client that sends commands to ``$CONTROL/dynamic-security/v1``
  and matches the answers on ``.../response`` by ``correlationData``. It keeps the
  ``edgefleet-server`` role and account and one role per device: the plugin in 2.0.11 does not
  expand ``%u`` / ``%c`` in ACL topics (measured: a ``subscribeLiteral`` or ``subscribePattern``
  on ``edgefleet/v1/devices/%u/assignment`` matches only that literal text), so a shared role
  cannot say "your own topic". Its :meth:`DynsecAdmin.add_device` is what ``devices.enroll``
  calls through ``fleet.broker_access``.
- :class:`DynsecBroker` runs a loopback Mosquitto with the plugin (tests, or a server that
  manages its own Mosquitto); against an external Mosquitto only :class:`DynsecAdmin` is needed.

Device ``d`` gets role ``edgefleet-device-d``: ``subscribeLiteral`` + ``publishClientReceive`` on
its ``assignment`` and its ``ack`` (the server's telemetry acknowledgement), and ``publishClientSend`` on its ``telemetry`` and ``status``; its client id is
bound to ``edgefleet-device-d`` so no one else can take over (or kick) its session.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgefleet.fsutil import atomic_write
from edgefleet.protocol import SERVER_USERNAME, TOPIC_ROOT, device_topic
from fleet_server.mqtt.broker import DEVICE_CLIENT_PREFIX, MAX_PACKET_BYTES, BrokerError, validate_device_id
from fleet_server.mqtt.mosquitto import MAX_INFLIGHT_MESSAGES, launch_mosquitto, loopback_port, stop_process

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
ADMIN_USERNAME = "edgefleet-admin"
ADMIN_ROLE = "edgefleet-dynsec-admin"
SERVER_ROLE = "edgefleet-server"
DEVICE_ROLE_PREFIX = "edgefleet-device-"
# The admin password is generated (256 bits) unless an operator supplies one; stretching costs
# one PBKDF2 per admin login only, so it is cheap insurance for a human-chosen password.
ADMIN_ITERATIONS = 10_000
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",  # Debian / Ubuntu amd64
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
# Default ACL access: only what a role grants. Unsubscribing stays allowed (refusing it protects nothing).
DEFAULT_ACL_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True}


class DynsecError(BrokerError):
    """A dynamic-security command failed, timed out, or would touch an account edgefleet does not own."""


@dataclass(frozen=True)
class Acl:
    """One dynsec ACL entry (``acltype`` is e.g. ``subscribeLiteral`` or ``publishClientSend``)."""

    acltype: str
    topic: str
    allow: bool = True
    priority: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"acltype": self.acltype, "topic": self.topic, "allow": self.allow, "priority": self.priority}


def server_acls(root: str = TOPIC_ROOT) -> list[Acl]:
    """The server account: publish, subscribe (wildcards included) and receive under ``edgefleet/v1/#``."""
    return [Acl(t, f"{root}/#") for t in ("publishClientSend", "publishClientReceive", "subscribePattern")]


def device_acls(device_id: str) -> list[Acl]:
    """A device: its own assignment and ack in (exact filters only), its own telemetry and status out."""
    device_id = validate_device_id(device_id)
    assignment, ack = device_topic(device_id, "assignment"), device_topic(device_id, "ack")
    return [
        Acl("subscribeLiteral", assignment),
        Acl("publishClientReceive", assignment),
        Acl("subscribeLiteral", ack),
        Acl("publishClientReceive", ack),
        Acl("publishClientSend", device_topic(device_id, "telemetry")),
        Acl("publishClientSend", device_topic(device_id, "status")),
    ]


def device_role(device_id: str) -> str:
    return f"{DEVICE_ROLE_PREFIX}{validate_device_id(device_id)}"


# --------------------------------------------------------------------------- config file

def dynsec_password(password: str, iterations: int = ADMIN_ITERATIONS, salt: bytes | None = None) -> dict[str, Any]:
    """The ``password``/``salt``/``iterations`` fields of a dynsec client (PBKDF2-HMAC-SHA512)."""
    if not password:
        raise DynsecError("password: empty")
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(), "iterations": iterations}


def initial_config(admin_user: str, admin_password: str, iterations: int = ADMIN_ITERATIONS) -> dict[str, Any]:
    """A fresh plugin config: the admin client and role, nothing else, everything denied by default."""
    control = "$CONTROL/dynamic-security/#"
    admin_acls = [Acl("publishClientSend", control), Acl("publishClientReceive", control), Acl("subscribePattern", control)]
    return {
        "clients": [{"username": admin_user, "textName": "edgefleet dynsec admin", "roles": [{"rolename": ADMIN_ROLE}],
                     **dynsec_password(admin_password, iterations)}],
        "roles": [{"rolename": ADMIN_ROLE, "acls": [a.as_json() for a in admin_acls]}],
        "groups": [],
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
    }


def write_initial_config(path: Path, admin_user: str, admin_password: str, owner: str | None = None,
                         iterations: int = ADMIN_ITERATIONS) -> None:
    """Create the plugin's JSON file (mode 0600). Refuses to overwrite: the file *is* the broker's
    credential store, and device tokens cannot be recovered from the server's hashes."""
    path = Path(path)
    if path.exists():
        raise DynsecError(f"{path}: already exists; not overwriting a dynamic-security config")
    atomic_write(path, json.dumps(initial_config(admin_user, admin_password, iterations), indent=1) + "\n", mode=0o600, owner=owner)


def dynsec_plugin_path() -> str:
    """Where the distribution installed ``mosquitto_dynamic_security.so``."""
    found = [p for p in DYNSEC_PLUGIN_PATHS if os.path.isfile(p)]
    found += sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))
    if not found:
        raise DynsecError("mosquitto_dynamic_security.so not found; it ships in Debian's `mosquitto` package")
    return found[0]


# --------------------------------------------------------------------------- admin client

@dataclass
class _Pending:
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    responses: dict[int, dict[str, Any]] = field(default_factory=dict)


class DynsecAdmin:
    """Manages edgefleet's accounts in a Mosquitto with the dynamic-security plugin.

    ``url`` is ``mqtt://host:port`` (``mqtts://`` uses TLS with the system CAs). Thread-safe:
    commands from several threads share one connection and are told apart by ``correlationData``.
    Connects on first use (or :meth:`connect`) and reconnects by itself; every call waits at most
    ``timeout`` seconds and raises :class:`DynsecError` otherwise. Usable as
    ``fleet.broker_access`` (:meth:`add_device`, :meth:`remove_device`).
    """

    def __init__(self, url: str, admin_user: str, admin_password: str, *, timeout: float = 10.0,
                 bind_client_ids: bool = True) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp"):
            raise DynsecError(f"url: expected mqtt://host:port, got {url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.admin_user = admin_user
        self.timeout = timeout
        self.bind_client_ids = bind_client_ids
        self._server_accounts: set[str] = {SERVER_USERNAME}
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgefleet-dynsec-{secrets.token_hex(6)}",
                                   protocol=mqtt.MQTTv311, clean_session=True)
        self._client.username_pw_set(admin_user, admin_password)
        if parts.scheme == "mqtts":
            self._client.tls_set()
        self._client.reconnect_delay_set(1, 10)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._ready = threading.Event()
        self._client.on_disconnect = lambda *a, **k: self._ready.clear()
        self._client.on_message = self._on_message
        self._lock = threading.Lock()  # guards _pending; taken by paho's network thread
        self._conn_lock = threading.Lock()  # guards connect/close; never taken by paho's thread
        self._pending: dict[str, _Pending] = {}
        self._failure: str | None = None
        self._sub_mid: int | None = None
        self._started = False

    # -- connection -------------------------------------------------------------------------
    def connect(self) -> DynsecAdmin:
        """Connect, subscribe to the response topic, and return once commands can be sent."""
        with self._conn_lock:
            if not self._started:
                self._failure = None
                try:
                    self._client.connect(self.host, self.port, keepalive=30)
                except OSError as exc:
                    raise DynsecError(f"dynsec admin: cannot reach {self.host}:{self.port}: {exc}") from exc
                self._client.loop_start()
                self._started = True
        deadline = time.monotonic() + self.timeout
        while not self._ready.wait(0.05):
            if self._failure is not None or time.monotonic() > deadline:
                failure = self._failure or f"not ready within {self.timeout} s"
                self.close()
                raise DynsecError(f"dynsec admin {self.admin_user!r} at {self.host}:{self.port}: {failure}")
        return self

    def close(self) -> None:
        with self._conn_lock:
            if self._started:
                self._client.disconnect()
                self._client.loop_stop()
                self._started = False
            self._ready.clear()

    def __enter__(self) -> DynsecAdmin:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            self._failure = f"login refused ({rc})"
            return
        _, self._sub_mid = client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        if mid != self._sub_mid:
            return
        if rcs and rcs[0].is_failure:
            self._failure = f"may not subscribe to {RESPONSE_TOPIC} (is {self.admin_user!r} the dynsec admin?)"
        else:
            self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            for response in responses if isinstance(responses, list) else []:
                request, _, index = str((response or {}).get("correlationData", "")).rpartition(":")
                pending = self._pending.get(request)
                if pending is not None and index.isdigit():
                    pending.responses[int(index)] = response
                    if len(pending.responses) == pending.size:
                        pending.done.set()

    # -- commands ---------------------------------------------------------------------------
    def execute(self, commands: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Send commands in one message (the plugin runs them in order); return the responses in
        the same order. A response with an ``error`` key is returned, not raised."""
        cmds = [dict(c) for c in commands]
        if not cmds:
            return []
        if not self._ready.is_set():
            self.connect()
        request = uuid.uuid4().hex
        for i, cmd in enumerate(cmds):
            cmd["correlationData"] = f"{request}:{i}"
        pending = _Pending(len(cmds))
        with self._lock:
            self._pending[request] = pending
        try:
            info = self._client.publish(CONTROL_TOPIC, json.dumps({"commands": cmds}), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise DynsecError(f"dynsec: publishing {[c['command'] for c in cmds]} failed ({mqtt.error_string(info.rc)})")
            if not pending.done.wait(self.timeout):
                raise DynsecError(f"dynsec: no response to {[c['command'] for c in cmds]} within {self.timeout} s")
        finally:
            with self._lock:
                self._pending.pop(request, None)
        return [pending.responses[i] for i in range(len(cmds))]

    def run(self, *commands: Mapping[str, Any], ok_errors: Collection[str] = ()) -> list[dict[str, Any]]:
        """:meth:`execute`, raising :class:`DynsecError` on any error not listed in ``ok_errors``."""
        responses = self.execute(commands)
        for cmd, resp in zip(commands, responses):
            error = resp.get("error")
            if error and error not in ok_errors:
                what = {k: v for k, v in cmd.items() if k not in ("password", "acls", "correlationData")}
                raise DynsecError(f"dynsec {cmd['command']} failed: {error} ({what})")
        return responses

    def get_client(self, username: str) -> dict[str, Any] | None:
        resp = self.run({"command": "getClient", "username": username}, ok_errors={"Client not found"})[0]
        return None if resp.get("error") else resp["data"]["client"]

    def get_role(self, rolename: str) -> dict[str, Any] | None:
        resp = self.run({"command": "getRole", "rolename": rolename}, ok_errors={"Role not found"})[0]
        return None if resp.get("error") else resp["data"]["role"]

    def ensure_default_acl_access(self) -> None:
        """Deny publish, receive and subscribe unless a role allows it."""
        self.run({"command": "setDefaultACLAccess",
                  "acls": [{"acltype": t, "allow": allow} for t, allow in DEFAULT_ACL_ACCESS.items()]})

    def ensure_role(self, rolename: str, acls: list[Acl]) -> None:
        """Create the role with exactly ``acls``, or bring an existing one to exactly ``acls``."""
        first = self.run({"command": "createRole", "rolename": rolename, "acls": [a.as_json() for a in acls]},
                         ok_errors={"Role already exists"})[0]
        if not first.get("error"):
            return
        role = self.get_role(rolename) or {"acls": []}
        have = {(a["acltype"], a["topic"]): Acl(a["acltype"], a["topic"], bool(a.get("allow")), int(a.get("priority", 0)))
                for a in role.get("acls", [])}
        want = {(a.acltype, a.topic): a for a in acls}
        fixes: list[dict[str, Any]] = []
        for key, acl in have.items():
            if want.get(key) != acl:
                fixes.append({"command": "removeRoleACL", "rolename": rolename, "acltype": key[0], "topic": key[1]})
        for key, acl in want.items():
            if have.get(key) != acl:
                fixes.append({"command": "addRoleACL", "rolename": rolename, **acl.as_json()})
        if fixes:
            self.run(*fixes)

    def ensure_server_account(self, username: str = SERVER_USERNAME, password: str | None = None) -> None:
        """Default ACL access, the ``edgefleet-server`` role, and the server's account with
        ``password`` (created, or its password reset). Run at server start."""
        if not password:
            raise DynsecError("password: the server account needs a password (no default secrets)")
        if username == self.admin_user or username.startswith(DEVICE_CLIENT_PREFIX):
            raise DynsecError(f"username: {username!r} is reserved")
        self.ensure_default_acl_access()
        self.ensure_role(SERVER_ROLE, server_acls())
        create = {"command": "createClient", "username": username, "password": password,
                  "textname": "edgefleet server", "roles": [{"rolename": SERVER_ROLE}]}
        if self.run(create, ok_errors={"Client already exists"})[0].get("error"):
            existing = self.get_client(username) or {}
            if any(r.get("rolename", "").startswith(DEVICE_ROLE_PREFIX) for r in existing.get("roles", [])):
                raise DynsecError(f"username: {username!r} is a device account, not the server's")
            roles = {r.get("rolename") for r in existing.get("roles", [])}
            self.run({"command": "setClientPassword", "username": username, "password": password},
                     *([] if SERVER_ROLE in roles else [{"command": "addClientRole", "username": username, "rolename": SERVER_ROLE}]))
        self._server_accounts.add(username)

    def _check_device_username(self, device_id: str) -> str:
        device_id = validate_device_id(device_id)
        if device_id == self.admin_user or device_id in self._server_accounts:
            raise DynsecError(f"device_id: {device_id!r} is reserved for the broker's admin or server account")
        return device_id

    def add_device(self, device_id: str, token: str) -> None:
        """Give a device its account and role; a known device gets ``token`` as its new password.
        Takes effect at once: the device can connect, no broker restart or reload."""
        device_id = self._check_device_username(device_id)
        if not token:
            raise DynsecError(f"token: empty token for device {device_id!r}")
        role = device_role(device_id)
        client_id = f"{DEVICE_CLIENT_PREFIX}{device_id}" if self.bind_client_ids else ""
        create_role = {"command": "createRole", "rolename": role, "acls": [a.as_json() for a in device_acls(device_id)]}
        create_client = {"command": "createClient", "username": device_id, "password": token, "clientid": client_id,
                         "textname": "edgefleet device", "roles": [{"rolename": role}]}
        # The common case (a new device) is one round trip.
        role_resp, client_resp = self.run(create_role, create_client, ok_errors={"Role already exists", "Client already exists"})
        if role_resp.get("error"):
            self.ensure_role(role, device_acls(device_id))
        if client_resp.get("error"):
            existing = self.get_client(device_id) or {}
            roles = [r.get("rolename") for r in existing.get("roles", [])]
            if roles != [role] or existing.get("groups"):
                raise DynsecError(f"device_id: a broker account {device_id!r} exists that edgefleet does not manage (roles {roles})")
            self.run({"command": "setClientPassword", "username": device_id, "password": token},
                     {"command": "setClientId", "username": device_id, "clientid": client_id})

    def remove_device(self, device_id: str) -> None:
        """Delete a device's account and role; it can no longer connect (the plugin also drops a
        live connection). Removing an unknown device is not an error."""
        device_id = self._check_device_username(device_id)
        role = device_role(device_id)
        existing = self.get_client(device_id)
        if existing is not None:
            roles = [r.get("rolename") for r in existing.get("roles", [])]
            if role not in roles:
                raise DynsecError(f"device_id: broker account {device_id!r} is not an edgefleet device (roles {roles})")
            self.run({"command": "deleteClient", "username": device_id}, ok_errors={"Client not found"})
        self.run({"command": "deleteRole", "rolename": role}, ok_errors={"Role not found"})

    def upgrade_device_roles(self) -> int:
        """Bring every device role to :func:`device_acls` (a broker whose devices enrolled before
        the ``ack`` topic existed would leave them unable to receive the server's acks). One
        ``listRoles`` round trip, then one per role that differs. Returns how many were fixed."""
        resp = self.run({"command": "listRoles", "verbose": True})[0]
        fixed = 0
        for role in resp.get("data", {}).get("roles", []):
            name = role.get("rolename", "")
            if not name.startswith(DEVICE_ROLE_PREFIX):
                continue
            try:
                want = device_acls(name[len(DEVICE_ROLE_PREFIX):])
            except BrokerError:
                continue
            have = {(a.get("acltype"), a.get("topic")) for a in role.get("acls", [])}
            if not {(a.acltype, a.topic) for a in want} <= have:
                self.ensure_role(name, want)
                fixed += 1
        return fixed

    def device_ids(self) -> set[str]:
        """Usernames of the device accounts in the broker, to reconcile against the database."""
        resp = self.run({"command": "listClients", "verbose": True})[0]
        return {c["username"] for c in resp["data"]["clients"]
                if any(r.get("rolename") == f"{DEVICE_ROLE_PREFIX}{c['username']}" for r in c.get("roles", []))}


# --------------------------------------------------------------------------- local broker

class DynsecBroker:
    """A loopback Mosquitto using the dynamic-security plugin, with edgefleet's admin account.

    ``workdir`` (mode 0700) holds ``dynamic-security.json`` (the plugin's state; created on first
    start, kept across restarts), ``dynsec-admin-password`` (generated unless ``admin_password``
    is given) and the Mosquitto config and log. Started as root, Mosquitto is told ``user root``
    unless ``run_as`` names the user to drop to (the files are then chowned to it)."""

    def __init__(self, workdir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 admin_user: str = ADMIN_USERNAME, admin_password: str | None = None,
                 plugin: str | None = None, run_as: str | None = None, extra_conf: str = "") -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = loopback_port(host, port, "DynsecBroker", DynsecError)
        self.admin_user = admin_user
        self._admin_password = admin_password
        self.plugin = plugin
        self.run_as = run_as
        self.extra_conf = extra_conf
        self.config_file = self.workdir / "dynamic-security.json"
        self.password_file = self.workdir / "dynsec-admin-password"
        self.conf = self.workdir / f"mosquitto-{self.port}.conf"
        self.log = self.workdir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def admin_password(self) -> str:
        if self._admin_password is None:
            if self.password_file.exists():
                self._admin_password = self.password_file.read_text().strip()
            else:
                self._admin_password = secrets.token_urlsafe(32)
                atomic_write(self.password_file, self._admin_password + "\n", mode=0o600, owner=self.run_as)
        return self._admin_password

    def conf_text(self) -> str:
        """The Mosquitto configuration; the same lines configure an external Mosquitto."""
        user = f"user {self.run_as or 'root'}\n" if os.geteuid() == 0 else ""
        return (
            "per_listener_settings false\n"
            f"listener {self.port} {self.host}\nallow_anonymous false\n"
            f"plugin {self.plugin or dynsec_plugin_path()}\nplugin_opt_config_file {self.config_file}\n"
            f"{user}persistence false\nlog_dest stderr\nmax_queued_messages 100000\nmax_packet_size {MAX_PACKET_BYTES}\n"
            f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}\n{self.extra_conf}"
        )

    def start(self, timeout: float = 10.0) -> DynsecBroker:
        """Create the plugin config if missing, launch Mosquitto, wait until it listens."""
        if self.proc is not None and self.proc.poll() is None:
            raise DynsecError("mosquitto (dynsec) already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        if self.run_as:
            shutil.chown(self.workdir, user=self.run_as)
        if not self.config_file.exists():
            write_initial_config(self.config_file, self.admin_user, self.admin_password, owner=self.run_as)
        self.conf.write_text(self.conf_text())
        self.proc = launch_mosquitto(self.conf, self.log, self.host, self.port, timeout, DynsecError)
        return self

    def admin(self, timeout: float = 10.0, **kwargs: Any) -> DynsecAdmin:
        """A connected :class:`DynsecAdmin` for this broker; close it when done."""
        return DynsecAdmin(self.url, self.admin_user, self.admin_password, timeout=timeout, **kwargs).connect()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
