"""Run the fleet server: database, broker (embedded or external), MQTT bridge, reconciler, WSGI.

``edgefleet server`` with no options: SQLite in ``./fleet-data`` and an embedded MQTT broker on
127.0.0.1. ``--db postgresql://...`` and ``--mqtt mqtt://host:port`` (Mosquitto) for production.
waitress serves HTTP (artifacts at ~1 GB/s here, twice werkzeug's dev server).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgefleet.protocol import SERVER_USERNAME
from fleet_server.api.fastpath import FastPath
from fleet_server.app import create_app
from fleet_server.core import ConfigError, Fleet, ServerConfig
from fleet_server.failures import LoggedError
from fleet_server.monitoring.service import Monitor

# waitress worker threads. 32, not waitress's 4 or our former 8: a scoring request holds its thread
# while its micro-batch runs in onnxruntime (which releases the GIL), so more threads let more
# concurrent requests join one backend call. bench/predict.py at 32 clients: 8 threads 45 % of the
# constant route (5.2 requests per backend call), 32 threads 55 % (7.3 per call), same loaded run.
HTTP_THREADS = 32


class Reconciler(threading.Thread):
    part = "rollout reconciler"
    last_error = LoggedError()  # logged once per distinct failure, and on recovery

    def __init__(self, fleet: Fleet, period: float) -> None:
        super().__init__(name="reconciler", daemon=True)
        self.fleet, self.period = fleet, period
        self.stop_event = threading.Event()
        self.wake = threading.Event()

    def run(self) -> None:
        from fleet_server import rollouts

        while not self.stop_event.is_set():
            self.wake.clear()  # before the pass: a wake set during it runs another pass at once, never lost
            try:
                rollouts.reconcile(self.fleet)
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep reconciling; the error is logged once and shown by /readyz
                self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            self.wake.wait(self.period)


def _reason(exc: BaseException) -> str:
    """One line from a startup exception: the driver's message for SQLAlchemy, strerror for OSError."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        orig = getattr(exc, "orig", None)  # sqlalchemy DBAPIError wraps the driver's error
        text = str(orig if orig is not None else exc)
    return " ".join(text.split()) or type(exc).__name__


def _safe_db_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - unparseable: show it as given (it has no password to hide)
        return url


@contextmanager
def _setting(field: str, value: Any, *errors: type[BaseException]) -> Iterator[None]:
    """Turn ``errors`` raised while a setting is put to use into a :class:`ConfigError` naming it."""
    try:
        yield
    except ConfigError:
        raise
    except errors as exc:
        raise ConfigError(field, value, _reason(exc)) from exc


@contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Silence libraries that log a failure's traceback themselves while we report it as one error."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _thread_check(thread: threading.Thread, last_error: str | None) -> tuple[bool, str]:
    if not thread.is_alive():
        return False, f"thread {thread.name} is not running" + (f"; last error: {last_error}" if last_error else "")
    return True, f"running; last error: {last_error}" if last_error else "running"


class FleetServer:
    """All the server's parts, startable in-process (tests, benches) or from the CLI."""

    def __init__(self, config: ServerConfig) -> None:
        # Absolute from here on: Flask's send_file resolves a relative path against the package
        # folder (app.root_path), not the cwd, so a relative data dir stored artifacts it then could not serve.
        config.data_dir = Path(config.data_dir).expanduser().resolve()
        self.cfg = config
        self.fleet = self._open_fleet(config)
        self.broker: Any = None
        self.ingest: Any = None  # the embedded broker's store-then-ack queue (None with --mqtt)
        self.bridge: Any = None
        self.http: Any = None
        self.wsgi: Any = None  # what waitress serves: the app behind the predict fast path
        self.reconciler = Reconciler(self.fleet, config.reconcile_seconds)
        self.monitor = Monitor(self.fleet, config.monitor_seconds)
        self.dynsec: Any = None

    @staticmethod
    def _open_fleet(config: ServerConfig) -> Fleet:
        """The Fleet, with a bad data dir, database URL or trusted key reported as a ConfigError."""
        from sqlalchemy.exc import SQLAlchemyError

        from edgefleet import keys
        from edgefleet.errors import EdgefleetError

        data_dir = Path(config.data_dir)
        if data_dir.exists() and not data_dir.is_dir():
            raise ConfigError("data_dir", str(data_dir), "exists and is not a directory")
        for path in config.trust_keys:
            with _setting("trust_keys", str(path), EdgefleetError):
                keys.load_public_key(path)
        db_field, db_value = ("db_url", _safe_db_url(config.db_url)) if config.db_url else ("data_dir", str(data_dir))
        try:
            from alembic.util.exc import CommandError
        except ImportError:  # pragma: no cover - alembic is a dependency
            CommandError = SQLAlchemyError  # type: ignore[misc,assignment]  # noqa: N806
        with _setting(db_field, db_value, SQLAlchemyError, CommandError, ImportError, ValueError):
            with _setting("data_dir", str(data_dir), OSError):
                return Fleet(config)
        raise AssertionError("unreachable")  # pragma: no cover

    def start(self) -> "FleetServer":
        """Start every part; if one cannot start, stop the started ones and raise (ConfigError for a bad setting)."""
        try:
            return self._start()
        except BaseException:
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - report the startup error, not a follow-on one
                pass
            raise

    def _start(self) -> "FleetServer":
        from waitress.server import create_server

        from fleet_server.mqtt.bridge import IngestQueue, MqttBridge
        from fleet_server.mqtt.broker import BrokerError

        mqtt_url = self.cfg.mqtt_url
        if mqtt_url is None and self.cfg.embedded_broker:
            from fleet_server.mqtt.broker import EmbeddedBroker

            # The embedded broker dies with this process, so it acknowledges a device's telemetry
            # only after the ingest queue committed it (see fleet_server/mqtt/broker.py).
            self.ingest = IngestQueue(self.fleet, on_status=self.reconciler.wake.set).start()
            self.broker = EmbeddedBroker(host="127.0.0.1", port=self.cfg.embedded_mqtt_port, access=self._broker_check,
                                         sink=self.ingest)
            with _setting("embedded_mqtt_port", self.cfg.embedded_mqtt_port, BrokerError, OSError), \
                    _quiet_loggers("amqtt", "amqtt.broker"):  # amqtt logs "Broker startup failed" with a traceback
                self.broker.start()
            mqtt_url = self.broker.url
        self.fleet.mqtt_url_for_devices = mqtt_url
        if self.cfg.mqtt_url and self.cfg.mqtt_admin:
            from fleet_server.mqtt.dynsec import DynsecAdmin

            user, password = self.cfg.mqtt_admin
            with _setting("mqtt_admin", user, BrokerError, OSError):
                self.dynsec = DynsecAdmin(self.cfg.mqtt_url, user, password).connect()
            self.dynsec.ensure_server_account(SERVER_USERNAME, self.fleet.secrets.mqtt_password)  # idempotent
            self.dynsec.upgrade_device_roles()  # devices enrolled before the ack topic get it
            self.fleet.broker_access = self.dynsec  # devices.enroll() -> add_device(device_id, credential)
        if mqtt_url:
            self.bridge = MqttBridge(self.fleet, mqtt_url, on_status=self.reconciler.wake.set, ingest=self.ingest,
                                     ingest_topics=self.ingest is None).start()
        app = create_app(self.fleet)  # before the reconciler: it registers the Fleet's rollout gates
        app.extensions["edgefleet.reconciler"] = self.reconciler  # the rollout POST hands its fan-out to it
        self._register_readiness()
        # POST .../predict's happy path skips Flask; everything else, errors included, is the app's (fleet_server/api/fastpath.py)
        self.wsgi = FastPath(app)
        self.reconciler.start()
        self.monitor.start()
        try:
            self.http = create_server(self.wsgi, host=self.cfg.host, port=self.cfg.port, threads=HTTP_THREADS, channel_timeout=60, connection_limit=2000)
        except (socket.gaierror, ValueError) as exc:  # waitress: ValueError "Invalid host/port specified."
            raise ConfigError("host", self.cfg.host, _reason(exc)) from exc
        except (OSError, OverflowError) as exc:
            raise ConfigError("port", self.cfg.port, f"cannot listen on {self.cfg.host}:{self.cfg.port}: {_reason(exc)}") from exc
        self.port = int(self.http.effective_port)  # waitress reports it as a str
        self.url = f"http://{self.cfg.host}:{self.port}"
        if self.cfg.public_url.endswith(":8080") and self.port != 8080:
            self.fleet.cfg.public_url = self.url
        self._stopping = False
        self._http_thread = threading.Thread(target=self._run_http, name="waitress", daemon=True)
        self._http_thread.start()
        return self

    def _register_readiness(self) -> None:
        """The parts ``/readyz`` asks besides the database (fleet_server.api.meta)."""
        checks = self.fleet.readiness
        if self.bridge is not None:
            checks["broker"] = self.bridge.readiness
        else:
            checks["broker"] = lambda: (True, "off: no MQTT broker, devices poll over HTTP")
        queue_ = self.ingest if self.ingest is not None else (self.bridge.ingest if self.bridge is not None else None)
        if queue_ is not None:
            checks["ingest"] = lambda: _thread_check(queue_._worker, queue_.last_error)
        checks["monitor"] = lambda: _thread_check(self.monitor, self.monitor.last_error)
        checks["reconciler"] = lambda: _thread_check(self.reconciler, self.reconciler.last_error)

    def _run_http(self) -> None:
        try:
            self.http.run()
        except (OSError, ValueError):
            if not self._stopping:  # closing the listening socket under select() is how waitress stops
                raise

    def _broker_check(self, username: str, password: str) -> Any:
        import hmac

        from fleet_server.db import Device
        from fleet_server.secrets import same_token

        if username == SERVER_USERNAME:
            return hmac.compare_digest(password, self.fleet.secrets.mqtt_password)
        with self.fleet.session() as s:
            dev = s.get(Device, username)
            return dev is not None and same_token(password, dev.token_hash)

    def stop(self) -> None:
        self.reconciler.stop_event.set()
        self.reconciler.wake.set()
        self.monitor.stop_event.set()
        if self.http is not None:
            self._stopping = True
            self.http.close()
            self.http.task_dispatcher.shutdown(timeout=5)
            # waitress's loop (so _http_thread) runs while any connection is open: an idle keep-alive client (a browser)
            # held every stop to the join's 5 s. Connections with no request left close once their output is flushed,
            # as waitress's own idle-channel maintenance has them do; an idle one's read side is shut so that the loop's
            # select wakes now (EOF: waitress closes it) rather than at its 1 s timeout.
            for channel in list(self.http.active_channels.values()):
                if not channel.requests:
                    channel.close_when_flushed = True
                    if not channel.total_outbufs_len:
                        try:
                            channel.socket.shutdown(socket.SHUT_RD)
                        except OSError:  # already closed by the client
                            pass
            if getattr(self, "_http_thread", None) is not None:
                self._http_thread.join(timeout=5)
        if self.bridge is not None:
            self.bridge.stop()
        if self.dynsec is not None:
            self.dynsec.close()
        if self.broker is not None:
            self.broker.stop()
        if self.ingest is not None:
            self.ingest.stop()  # after the broker: nothing new arrives; what is queued is stored
        self.fleet.engine.dispose()


def serve_forever(config: ServerConfig) -> int:
    server = FleetServer(config).start()
    f = server.fleet
    sec = f.secrets
    print(f"edgefleet server on {server.url} (db {f.db_url.split('@')[-1]}, mqtt {f.mqtt_url_for_devices or 'off'})", flush=True)
    print(f"admin token: {sec.dir / 'admin-token'}{' (generated now)' if sec.created else ''}; assignment key id {sec.signing_key_id}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        stop.wait(1.0)
    server.stop()
    return 0

