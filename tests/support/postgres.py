"""A real, throw-away PostgreSQL server on a free loopback port, started and stopped by tests.

Each ``PostgresServer`` gets a fresh cluster (``initdb``) in its own directory under ``/tmp``,
listens on ``127.0.0.1:<free port>`` with password (SCRAM) authentication, and owns a database
and a login role with a random password. Nothing of the system cluster (``/var/lib/postgresql``,
port 5432, ``pg_ctlcluster``) is used or touched.

PostgreSQL refuses to run as root. When the tests run as root, every server-side command runs as
the ``postgres`` user, and the cluster lives in a ``mkdtemp`` directory under ``/tmp`` that is
chowned to ``postgres`` (pytest's own tmp dirs are 0700 root, which ``postgres`` cannot enter).
The server log is copied into ``workdir`` when the server stops, and the ``/tmp`` directory is
removed.

The binaries are looked up in ``/usr/lib/postgresql/<version>/bin`` (Debian's layout, not on
``PATH``; the highest version wins), then next to a ``pg_ctl`` on ``PATH``. ``make test``
installs the Debian package ``postgresql`` when they are missing.

Use in a test module or conftest::

    from tests.support.postgres import postgres_url  # noqa: F401

    def test_something(postgres_url: str) -> None:
        engine = sqlalchemy.create_engine(postgres_url)   # postgresql+psycopg://...
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DEBIAN_BIN_ROOT = Path("/usr/lib/postgresql")
STARTUP_TIMEOUT = 10  # seconds for pg_ctl start -w
COMMAND_TIMEOUT = 30  # hard cap on any single subprocess (initdb included)
MISSING_MESSAGE = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {root}/<version>/bin or on PATH; "
    "`make test` installs the Debian package `postgresql` "
    "(by hand: apt-get update && apt-get install -y postgresql)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)


def find_bindir() -> Path:
    """The bin directory of the highest installed PostgreSQL version holding initdb and pg_ctl."""
    candidates: list[Path] = []
    if DEBIAN_BIN_ROOT.is_dir():
        versions = sorted((d for d in DEBIAN_BIN_ROOT.iterdir() if d.is_dir()), key=lambda d: _version_key(d.name), reverse=True)
        candidates += [d / "bin" for d in versions]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise RuntimeError(MISSING_MESSAGE.format(root=DEBIAN_BIN_ROOT))


class PostgresServer:
    """``PostgresServer(workdir).start()`` -> running server; ``.url``; ``.stop()``."""

    def __init__(self, workdir: Path, *, database: str = "edgefleet", user: str = "edgefleet", password: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.database = database
        self.user = user
        self.password = password or secrets.token_hex(16)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.bindir: Path | None = None
        self.root: Path | None = None  # mkdtemp under /tmp, owned by the server's OS user
        self.startup_seconds: float | None = None
        self._run_as: pwd.struct_passwd | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("PostgresServer is not started")
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        assert self.root is not None
        return self.root / "sock"

    @property
    def logfile(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def start(self) -> "PostgresServer":
        if self.port is not None:
            return self
        t0 = time.monotonic()
        self.bindir = find_bindir()
        self._run_as = self._server_user()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="edgefleet-pg-", dir="/tmp"))
        atexit.register(self.stop)
        try:
            self.sockdir.mkdir(mode=0o700)
            if self._run_as is not None:
                for p in (self.root, self.sockdir):
                    os.chown(p, self._run_as.pw_uid, self._run_as.pw_gid)
            self._initdb()
            self._pg_ctl_start()
            self._create_role_and_database()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        root, port = self.root, self.port
        try:
            if (self.datadir / "postmaster.pid").exists():
                try:
                    self._run([self._bin("pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "10"], timeout=15)
                except (subprocess.SubprocessError, RuntimeError):
                    self._kill_postmaster()
            if self.logfile.exists():
                shutil.copyfile(self.logfile, self.workdir / f"postgres-{port or 'unstarted'}.log")
        finally:
            shutil.rmtree(root, ignore_errors=True)
            self.root = None
            self.port = None
            atexit.unregister(self.stop)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _server_user() -> pwd.struct_passwd | None:
        """None when we are not root (the server runs as us); else the ``postgres`` account."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root but there is no `postgres` user; " + MISSING_MESSAGE.format(root=DEBIAN_BIN_ROOT)) from None

    def _bin(self, name: str) -> str:
        assert self.bindir is not None
        return str(self.bindir / name)

    def _run(self, args: list[str], timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run a server-side command as the server's OS user; raise with its output on failure."""
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        kwargs: dict[str, Any] = {}
        if self._run_as is not None:
            env["HOME"] = self._run_as.pw_dir
            env["USER"] = env["LOGNAME"] = self._run_as.pw_name
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        proc = subprocess.run(
            args, cwd=str(self.root), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout, check=False, **kwargs,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} {args[1] if len(args) > 1 else ''} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")
        return proc

    def _initdb(self) -> None:
        self._run([
            self._bin("initdb"), "-D", str(self.datadir), "-U", "postgres", "-E", "UTF8", "--locale=C",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions",
        ])

    def _pg_ctl_start(self) -> None:
        # Several tries only for the race where another process grabs the free port first.
        last_error: Exception | None = None
        for _ in range(3):
            port = free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {self.sockdir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
            )
            try:
                self._run(
                    [self._bin("pg_ctl"), "start", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", str(STARTUP_TIMEOUT), "-o", opts],
                    timeout=STARTUP_TIMEOUT + 5,
                )
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                last_error = e
                self._kill_postmaster()
                log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
                if "could not bind" in log or "Address already in use" in log:
                    continue
                raise RuntimeError(f"PostgreSQL did not start: {e}\n{log[-2000:]}") from e
            if not port_open(port):
                raise RuntimeError(f"PostgreSQL started but 127.0.0.1:{port} is not accepting connections")
            self.port = port
            return
        raise RuntimeError(f"PostgreSQL could not bind a free port: {last_error}")

    def _create_role_and_database(self) -> None:
        import psycopg
        from psycopg import sql

        # Superuser over the unix socket (trust; the socket dir is 0700 and owned by the server user).
        with psycopg.connect(host=str(self.sockdir), port=self.port, user="postgres", dbname="postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(self.user), sql.Literal(self.password)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(self.database), sql.Identifier(self.user)))

    def _kill_postmaster(self) -> None:
        pidfile = self.datadir / "postmaster.pid" if self.root else None
        if pidfile is None or not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg://…``) of a server shared by the whole test session.

    Import it into a conftest or test module to use it:
    ``from tests.support.postgres import postgres_url  # noqa: F401``
    """
    server = PostgresServer(tmp_path_factory.mktemp("postgres")).start()
    try:
        yield server.url
    finally:
        server.stop()
