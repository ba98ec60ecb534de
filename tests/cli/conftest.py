"""CLI fixtures: the real ``edgefleet`` console script in a subprocess, from a temporary working directory.

``edgefleet_server`` starts ``edgefleet server`` the way the README does (default ``--data-dir``,
so ``./fleet-data`` of the temp cwd), on free loopback ports, and stops it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.runtimes.conftest import lr_result, make_bundle  # noqa: F401 - shared fixtures
from tests.support.mqtt_broker import free_port

ROOT = Path(__file__).resolve().parents[2]
EDGEFLEET = ROOT / ".venv" / "bin" / "edgefleet"
if not EDGEFLEET.exists():
    EDGEFLEET = Path(sys.executable).with_name("edgefleet")


def cli_env(cwd: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no EDGEFLEET_* from the caller, HOME (and so ~/.config) inside the test's folder."""
    return {"PATH": "/usr/bin:/bin:/usr/sbin", "HOME": str(cwd), **extra}


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EDGEFLEET), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else cli_env(cwd), input=input)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str, status: int | None = None) -> str:
    """Non-zero exit, no traceback, exactly one stderr line, holding every needle (case-insensitive)."""
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode != 0, out
    if status is not None:
        assert proc.returncode == status, (proc.returncode, out)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])
    return lines[0]


@dataclass
class RunningServer:
    proc: subprocess.Popen[str]
    cwd: Path
    url: str
    mqtt_port: int | None

    @property
    def token(self) -> str:
        return (self.cwd / "fleet-data" / "secrets" / "admin-token").read_text().strip()

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A fleet verb run from the server's cwd: the default --token-file finds ./fleet-data/secrets/admin-token."""
        return run_cli(*args, cwd=self.cwd, env=env or cli_env(self.cwd, EDGEFLEET_SERVER=self.url), timeout=timeout)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=None if body is None else json.dumps(body).encode(), method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def start_server(cwd: Path, *extra: str, broker: bool = False) -> RunningServer:
    port = free_port()
    mqtt = free_port() if broker else None
    opts = ["--mqtt-port", str(mqtt)] if broker else ["--no-broker"]
    proc = subprocess.Popen([str(EDGEFLEET), "server", "--port", str(port), *opts, *extra], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(cwd))
    srv = RunningServer(proc, cwd, f"http://127.0.0.1:{port}", mqtt)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"edgefleet server exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            urllib.request.urlopen(srv.url + "/healthz", timeout=2).read()
            return srv
        except OSError:
            time.sleep(0.2)
    stop_server(srv)
    raise AssertionError("edgefleet server did not answer /healthz within 60 s")


def stop_server(srv: RunningServer) -> tuple[str, str]:
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
    try:
        return srv.proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(srv.proc.pid, signal.SIGKILL)
        return srv.proc.communicate()


@pytest.fixture()
def server_in_cwd(tmp_path: Path, keypair: dict[str, Any]) -> Iterator[RunningServer]:
    """``edgefleet server --trust-key KEY`` from a fresh cwd, with the default data dir."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    srv = start_server(cwd, "--trust-key", str(keypair["public_path"]))
    try:
        yield srv
    finally:
        stop_server(srv)
