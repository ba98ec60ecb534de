"""The built wheel works outside the checkout: wheel -> fresh venv with ``[server]`` -> ``edgefleet
server`` started in an empty folder -> the dashboard, the onnxruntime-web wasm and ``/readyz``
are served from the installed package; with the (external, real) Mosquitto stopped, ``/readyz``
answers 503 naming the broker.

Nothing from the checkout is on the child's path: the venv is fresh (no system site-packages),
the working directory is a temporary folder, and ``PYTHONPATH`` is cleared. Installing the
``[server]`` extra resolves from the package index (the pip cache that ``make install`` filled).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path
from typing import Any

import pytest

from tests.support.mqtt_broker import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def _wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with the built wheel and its [server] extra."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
                   check=True, cwd=base, capture_output=True, timeout=300)
    (wheel,) = dist.glob("edgefleet-*.whl")
    env_dir = base / "venv"
    # No pip inside the venv (ensurepip costs seconds and the test never runs it): this venv's pip installs into it
    # (``pip --python``), without byte-compiling every dependency up front (Python compiles what it imports anyway).
    venv.EnvBuilder(with_pip=False, clear=True).create(env_dir)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q", "--disable-pip-version-check",
                    "--no-compile", f"{wheel}[server]"],
                   check=True, cwd=base, capture_output=True, timeout=900, env={**os.environ, "PYTHONPATH": ""})
    return env_dir


@pytest.mark.timeout(1200)
def test_wheel_server_serves_pages_wasm_and_readiness(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{installed / 'bin'}:{env.get('PATH', '')}"
    probe = subprocess.run([str(installed / "bin" / "python"), "-c", "import fleet_server, sys; print(fleet_server.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert str(installed) in probe.stdout and str(ROOT) not in probe.stdout, probe.stdout  # the installed copy, not the checkout

    (tmp_path / "mosquitto").mkdir()
    broker = Mosquitto(tmp_path / "mosquitto").start()
    port = free_port()
    work = tmp_path / "cwd"
    work.mkdir()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([str(installed / "bin" / "edgefleet"), "server", "--port", str(port), "--mqtt", broker.url],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get(base + "/healthz")[0] == 200, 90, "the installed server's /healthz")
        assert (work / "fleet-data" / "secrets" / "admin-token").is_file()  # the default data dir is in the caller's folder

        code, headers, body = _get(base + "/dashboard/")
        assert code == 200 and b"<html" in body.lower(), (code, body[:200])
        code, headers, body = _get(base + "/demo/")
        assert code == 200 and b"<html" in body.lower(), (code, body[:200])
        code, headers, body = _get(base + "/demo/vendor/ort/ort-wasm-simd-threaded.wasm")
        assert code == 200, (code, body[:200])
        assert headers.get("Content-Type", "").startswith("application/wasm"), headers
        assert body[:4] == b"\0asm" and len(body) > 1_000_000

        code, _, body = _wait(lambda: (lambda r: r if r[0] == 200 else None)(_get(base + "/readyz")), 60, "/readyz 200")
        assert json.loads(body)["ready"] is True

        broker.stop()
        code, _, body = _wait(lambda: (lambda r: r if r[0] == 503 else None)(_get(base + "/readyz")), 60, "/readyz 503 with the broker down")
        doc = json.loads(body)
        assert doc["ready"] is False and "broker" in doc["failing"], doc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        broker.stop()
        log.close()
    out = (tmp_path / "server.log").read_text(errors="replace")
    assert "Traceback" not in out, out[-3000:]

