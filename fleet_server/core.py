"""The server's shared context: database, folders, secrets, trusted keys and the publisher.

Blueprints, the MQTT bridge and the rollout reconciler all work through one ``Fleet``. It does
no network IO itself: publishing an assignment goes through ``publish`` (the MQTT bridge sets
it; without a broker it is a no-op and devices poll over HTTP).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from edgefleet import keys
from edgefleet.errors import KeyFileError
from edgefleet.fsutil import atomic_write
from fleet_server.db import bump_counter, init_db, make_engine, session_factory
from fleet_server.errors import FleetError
from fleet_server.secrets import ServerSecrets


class ConfigError(FleetError):
    """A server setting that cannot be used; ``field`` names the :class:`ServerConfig` field."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"{field}: cannot use {value!r}: {reason}")
        self.field, self.value, self.reason = field, value, reason


def _check_port(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(field, value, "a port must be an integer 0..65535 (0 picks a free one)")


@dataclass
class ServerConfig:
    """Server settings; times in seconds."""

    data_dir: Path
    db_url: str | None = None                 # default: sqlite in data_dir
    scores_db_url: str | None = None          # batch scores for GET /api/v1/scores (?table=T); default: db_url, table scores
    mqtt_url: str | None = None               # external broker; None = embedded broker (or none, see embedded_broker)
    embedded_broker: bool = True
    embedded_mqtt_port: int = 1883            # loopback only; 0 picks a free port (tests)
    public_url: str = "http://127.0.0.1:8080"  # what devices are told to use
    host: str = "127.0.0.1"
    port: int = 8080
    reconcile_seconds: float = 0.5
    step_timeout_seconds: float = 900.0
    monitor_seconds: float = 60.0              # drift/performance monitor pass (fleet_server.monitoring.service)
    enrollment_ttl_seconds: float = 7 * 24 * 3600
    max_telemetry_bytes: int = 4 * 1024 * 1024
    max_bundle_bytes: int = 512 * 1024 * 1024
    trust_keys: list[Path] = field(default_factory=list)
    # (user, password) of the Mosquitto dynamic-security admin for mqtt_url; the server then
    # creates a device account with per-device ACLs at enrollment. None: accounts are managed elsewhere.
    mqtt_admin: tuple[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_port("port", self.port)
        _check_port("embedded_mqtt_port", self.embedded_mqtt_port)
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError("host", self.host, "empty")
        if self.db_url is not None and (not isinstance(self.db_url, str) or not self.db_url.strip()):
            raise ConfigError("db_url", self.db_url, "empty")
        if self.mqtt_admin is not None:
            user, password = self.mqtt_admin
            if not user:
                raise ConfigError("mqtt_admin", user, "empty user name")
            if not password:
                raise ConfigError("mqtt_admin", user, "empty password")


Gate = Callable[..., Any]  # (fleet, rollout, targets) -> None | reason | rollouts.Wait(reason)


class GateRegistry:
    """The rollout gates of one :class:`Fleet`, asked in registration order when a step settles.

    ``create_app`` fills it (the ML canary gate); the built-in install/health gate of
    :mod:`fleet_server.rollouts` always runs first and is not registered here. Each Fleet has its
    own registry, so two apps in one process never share gates.
    """

    def __init__(self) -> None:
        self._gates: dict[str, Gate] = {}

    def register(self, name: str, gate: Gate) -> None:
        """Add ``gate`` under ``name``; the same gate again is a no-op, another one under a taken name is refused."""
        if not callable(gate):
            raise TypeError(f"gate {name!r}: {gate!r} is not callable")
        if self._gates.get(name, gate) is not gate:
            raise ValueError(f"gate {name!r}: already registered as {self._gates[name]!r}")
        self._gates[name] = gate

    def names(self) -> list[str]:
        return list(self._gates)

    def __iter__(self) -> Iterator[Gate]:
        return iter(list(self._gates.values()))

    def __contains__(self, gate: object) -> bool:
        return gate in self._gates.values()


class Fleet:
    def __init__(self, config: ServerConfig) -> None:
        self.cfg = config
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir = self.data_dir / "artifacts"
        self.trusted_dir = self.data_dir / "trusted-keys"
        for d in (self.artifacts_dir, self.trusted_dir):
            d.mkdir(exist_ok=True)
        self.db_url = config.db_url or f"sqlite:///{self.data_dir / 'fleet.sqlite'}"
        self.engine = make_engine(self.db_url)
        init_db(self.engine)
        self.Session = session_factory(self.engine)
        self.secrets = ServerSecrets.load_or_create(self.data_dir)
        for path in config.trust_keys:
            self.trust_key(Path(path).read_bytes())
        self.publish: Callable[[str, bytes, bool], None] = lambda topic, payload, retain: None
        self.mqtt_url_for_devices: str | None = config.mqtt_url
        self.lock = threading.RLock()
        self.broker_access: Any = None  # set by serve: adds device credentials to the broker
        self.scorers: dict[tuple[str, int], Any] = {}  # REST predict: verified scorers by (name, version)
        self.latest_versions: dict[str, int] = {}      # name -> newest version, reset by uploads
        self.gates = GateRegistry()                    # rollout gates beyond the built-in one (create_app fills it)
        # /readyz: name -> () -> (ok, detail), beside the database check; serve adds broker and threads
        self.readiness: dict[str, Callable[[], tuple[bool, str]]] = {}

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self.Session()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()
        for topic, payload in s.info.pop("publish", []):  # only what was committed goes out
            self.publish(topic, payload, True)

    def commit_and_publish(self, s: Session) -> None:
        """Commit what a long pass has done so far and send its assignments now."""
        s.commit()
        for topic, payload in s.info.pop("publish", []):
            self.publish(topic, payload, True)

    # -- trusted publisher keys ------------------------------------------------------------
    def trust_key(self, pem: bytes) -> str:
        try:
            key = keys.public_key_from_pem(pem, "key")
        except KeyFileError as exc:
            raise FleetError(str(exc)) from exc
        kid = keys.key_id(key)
        atomic_write(self.trusted_dir / f"{kid}.pem", pem)
        return kid

    def trusted_keys(self) -> list[Ed25519PublicKey]:
        out = []
        for p in sorted(self.trusted_dir.glob("*.pem")):
            try:
                out.append(keys.load_public_key(p))
            except KeyFileError:
                continue
        return out

    def device_trust_pems(self) -> list[str]:
        """What a device trusts: the server's assignment key and every trusted publisher key."""
        pems = [(self.secrets.dir / "server-key.pub.pem").read_text()]
        pems += [p.read_text() for p in sorted(self.trusted_dir.glob("*.pem"))]
        return pems

    def bump(self, session: Session, name: str, n: int = 1) -> None:
        bump_counter(session, name, n)  # applied atomically at commit, dropped on rollback
