"""Mosquitto for production: the access policy as password + ACL files, and the broker process.

:class:`MosquittoAccess` renders :class:`fleet_server.mqtt.broker.BrokerAccess` as Mosquitto's password
file (``$7$`` PBKDF2-SHA512) and ACL file, written atomically and reloaded by SIGHUP;
:class:`MosquittoBroker` runs a Mosquitto on loopback that uses them. ``launch_mosquitto`` and
``stop_process`` are the one way this project starts and stops a Mosquitto (the dynamic-security
broker and the test fixtures use them too). Mosquitto 2.0.11's ``acl_file`` does not check
SUBSCRIBE (it grants even ``#``) but checks ``read`` on every delivery, retained ones included;
for a refused SUBSCRIBE use :mod:`fleet_server.mqtt.dynsec`. Password files cannot bind a
client id to an account either, so :class:`MosquittoBroker` sets ``use_username_as_clientid``:
a device connecting as client id ``edgefleet-server`` (or another device's id) gets its own
username as client id and cannot take over the server's or anyone's session (dynsec binds the
ids per account instead).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from edgefleet.fsutil import atomic_write
from edgefleet.protocol import SERVER_USERNAME, TOPIC_ROOT, device_topic
from fleet_server.mqtt.broker import MAX_PACKET_BYTES, BrokerAccess, BrokerError, validate_device_id

MOSQUITTO_ITERATIONS = 101  # mosquitto_passwd's default; tokens are 256-bit random, stretching adds nothing
# QoS 1 messages Mosquitto sends a client before it waits for PUBACKs (its default is 20). The
# server's bridge acknowledges a telemetry batch only after the commit that stored it, so with 20
# a commit group could never hold more than 20 batches and the ingest worker waited on the round
# trip instead of storing (bench/ingest.py). Devices receive few messages, so the bound costs them nothing.
MAX_INFLIGHT_MESSAGES = 1000


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = MOSQUITTO_ITERATIONS) -> str:
    """A Mosquitto 2.x ``$7$`` PBKDF2-SHA512 hash as mosquitto_passwd writes it, computed
    in-process so enrolling a thousand devices does not spawn a thousand processes."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class MosquittoAccess:
    """Renders a :class:`BrokerAccess` as Mosquitto's ``password_file`` and ``acl_file``.

    The ACL is static (``pattern`` lines with ``%u``), so enrolling a device changes only the
    password file: :meth:`write`, then :meth:`reload`. ``owner`` chowns both files (for a
    Mosquitto that drops privileges to that user)."""

    def __init__(self, workdir: Path, access: BrokerAccess, owner: str | None = None) -> None:
        if access.password_check is not None:
            raise BrokerError("MosquittoAccess needs device tokens; an access with a password_check callback has none")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.access = access
        self.owner = owner
        self.password_file = self.workdir / "passwd"
        self.acl_file = self.workdir / "acl"

    def acl_text(self) -> str:
        """Mosquitto ACL equivalent to :meth:`BrokerAccess.allowed`."""
        return (
            "# Managed by edgefleet (fleet_server/mqtt/mosquitto.py); rewritten on every change.\n"
            f"user {SERVER_USERNAME}\n"
            f"topic readwrite {TOPIC_ROOT}/#\n\n"
            f"pattern read {device_topic('%u', 'assignment')}\n"
            f"pattern read {device_topic('%u', 'ack')}\n"
            f"pattern write {device_topic('%u', 'telemetry')}\n"
            f"pattern write {device_topic('%u', 'status')}\n"
        )

    def password_text(self) -> str:
        devices = sorted(self.access.store.all_tokens().items())
        lines = [f"{SERVER_USERNAME}:{mosquitto_hash(self.access.server_password)}"]
        lines += [f"{validate_device_id(device_id)}:{mosquitto_hash(token)}" for device_id, token in devices]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Rewrite both files atomically from the current credentials."""
        atomic_write(self.acl_file, self.acl_text(), mode=0o600, owner=self.owner)  # hashes: the broker user only
        atomic_write(self.password_file, self.password_text(), mode=0o600, owner=self.owner)

    @staticmethod
    def reload(pid: int) -> None:
        """Ask Mosquitto to reread its password and ACL files (SIGHUP); returns at once."""
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError as exc:
            raise BrokerError(f"mosquitto pid {pid} is not running; cannot reload credentials") from exc


def mosquitto_binary() -> str:
    """Path of the mosquitto daemon (Debian installs it in /usr/sbin, often not on PATH)."""
    for path in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if path and os.access(path, os.X_OK):
            return path
    raise BrokerError("mosquitto is not installed; `make test` installs it (apt-get install mosquitto)")


def loopback_port(host: str, port: int | None, what: str, error: type[Exception] = BrokerError) -> int:
    """Refuse a non-loopback host; pick a free port when none is given."""
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise error(f"host: {what} listens on loopback only, not {host!r}")
    if port:
        return port
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def launch_mosquitto(conf: Path, log: Path, host: str, port: int, timeout: float = 10.0,
                     error: type[Exception] = BrokerError) -> subprocess.Popen[bytes]:
    """Start ``mosquitto -c conf`` (stderr to ``log``) and wait until it accepts connections."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=fh)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise error(f"mosquitto exited with {proc.returncode}: {log.read_text()[-800:]}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    stop_process(proc)
    raise error(f"mosquitto did not listen on {host}:{port} within {timeout} s")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class MosquittoBroker:
    """A loopback Mosquitto enforcing :class:`MosquittoAccess` (``allow_anonymous false``).

    Started as root, Mosquitto 2.0 drops to user ``mosquitto`` and then cannot read 0600 root
    files in a private folder, so it is told ``user root`` unless ``run_as`` names the user to
    drop to (the files are then chowned to it). It logs to stderr, captured in ``log``."""

    def __init__(self, files: MosquittoAccess, port: int | None = None, host: str = "127.0.0.1",
                 run_as: str | None = None, extra_conf: str = "") -> None:
        self.files = files
        self.host = host
        self.port = loopback_port(host, port, "MosquittoBroker")
        self.run_as = run_as
        self.extra_conf = extra_conf
        self.conf = files.workdir / f"mosquitto-{self.port}.conf"
        self.log = files.workdir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Write the access files and config, launch Mosquitto, wait until it listens."""
        self.files.owner = self.files.owner or self.run_as
        self.files.write()
        user = f"user {self.run_as or 'root'}\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous false\n"
            f"password_file {self.files.password_file}\nacl_file {self.files.acl_file}\n"
            f"{user}persistence false\nlog_dest stderr\nmax_queued_messages 100000\nmax_packet_size {MAX_PACKET_BYTES}\n"
            f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}\nuse_username_as_clientid true\n{self.extra_conf}"
        )
        self.proc = launch_mosquitto(self.conf, self.log, self.host, self.port, timeout)
        return self

    def reload(self) -> None:
        """Rewrite the access files and SIGHUP Mosquitto so new devices can log in."""
        if self.proc is None or self.proc.poll() is not None:
            raise BrokerError("mosquitto is not running; cannot reload its credentials")
        self.files.write()
        self.files.reload(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
