"""`edgefleet quickstart` as a newcomer runs it: everything up, both pages served, Ctrl-C stops it all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

EDGEFLEET = [sys.executable, "-m", "edgefleet_cli.main"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"), PYTHONUNBUFFERED="1")
    return env


def test_quickstart_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([*EDGEFLEET, "quickstart", "--port", str(port), "--dir", str(tmp_path / "qs")], capture_output=True,
                              text=True, env=_env(tmp_path), timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--port {port}" in lines[0] and "pick another with --port" in lines[0]
    assert not (tmp_path / "qs" / "fleet-data").exists(), "nothing should start when a port is taken"


def test_a_port_left_in_time_wait_counts_as_free() -> None:
    """A closed connection in TIME_WAIT does not stop a real listener (Mosquitto and waitress set SO_REUSEADDR), so the
    pre-flight check must not refuse it either; a live listener is still refused."""
    from edgefleet_cli.quickstart import QuickstartError, _require_free_port

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(QuickstartError, match=f"--port {port}: cannot listen"):
            _require_free_port(port, "--port")
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first, so its end of the connection goes to TIME_WAIT
        time.sleep(0.2)
        client.close()
    time.sleep(0.2)
    local = f"0100007F:{port:04X}"  # /proc/net/tcp: local address 127.0.0.1:port, state 06 = TIME_WAIT
    states = [line.split()[3] for line in Path("/proc/net/tcp").read_text().splitlines()[1:] if line.split()[1] == local]
    assert "06" in states, states
    assert _require_free_port(port, "--port") == port


@pytest.mark.slow  # the default run covers `quickstart --once` through tests/test_readme.py; this is the Ctrl-C path
@pytest.mark.timeout(420)
def test_quickstart_serves_both_pages_until_ctrl_c(tmp_path: Path) -> None:
    qs = tmp_path / "qs"
    proc = subprocess.Popen([*EDGEFLEET, "quickstart", "--port", "0", "--mqtt-port", "0", "--dir", str(qs)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path))
    out: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 360
        for line in proc.stdout:
            out.append(line)
            if "press Ctrl-C to stop" in line or time.monotonic() > deadline:
                break
        text = "".join(out)
        assert "press Ctrl-C to stop" in text, text
        # each step shows the command a user would type, with paths relative to where they ran it
        for cmd in ("$ edgefleet keys generate --out qs/keys", "$ edgefleet compile qs/data/churn_rf.joblib", "$ edgefleet publish",
                    "$ edgefleet rollout start --model churn"):
            assert cmd in text, (cmd, text)
        urls = dict(re.findall(r"^\s+(demo|dashboard)\s+(http://127\.0\.0\.1:\d+/\S+)", text, re.M))
        assert set(urls) == {"demo", "dashboard"}, text
        for url in urls.values():
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200
        # the agent installed the model and scored the customers file dropped in its inbox
        assert list((qs / "agent" / "inbox" / "scored").iterdir())
        port = int(urls["demo"].split(":")[2].split("/")[0])
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "stopped the agent" in rest and "stopped the server" in rest
        assert "Traceback" not in text + rest
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the server still listens after Ctrl-C"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
