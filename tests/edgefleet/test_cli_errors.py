"""A careless operator's bad option gets one line on stderr naming the option and the reason (issue 10).

Every case runs the real ``.venv/bin/edgefleet`` as a subprocess: exit status non-zero, exactly one
non-empty stderr line, the option named in it, no traceback anywhere, and the server never listening.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EDGEFLEET = ROOT / ".venv" / "bin" / "edgefleet"
if not EDGEFLEET.exists():  # e.g. run from another interpreter: the console script beside it
    EDGEFLEET = Path(sys.executable).with_name("edgefleet")


def run_cli(*args: str, cwd: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EDGEFLEET), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin:/usr/sbin", "HOME": str(cwd)})


def assert_one_line_error(proc: subprocess.CompletedProcess[str], option: str, *reason: str) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode not in (0, None), out
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith("edgefleet"), line
    assert option in line, line
    for r in reason:
        assert r.lower() in line.lower(), line
    assert "edgefleet server on http" not in proc.stdout, "the server started listening"
    return line


# ---------------------------------------------------------------------------------- edgefleet server

def test_server_data_dir_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    line = assert_one_line_error(run_cli("server", "--data-dir", str(f), "--no-broker", "--port", "0", cwd=tmp_path),
                                 "--data-dir", "not a directory")
    assert line.startswith("edgefleet server: error: --data-dir:"), line
    assert f.read_text() == "x"


@pytest.mark.parametrize("url, reason", [
    ("junk://", "sqlalchemy.dialects:junk"),
    ("not a url", "could not parse"),
    ("postgresql://fleet:s3cret-pw@127.0.0.1:1/edgefleet", "connection refused"),
    ("sqlite:////etc/passwd", "not a database"),
])
def test_server_bad_db_url(tmp_path: Path, url: str, reason: str) -> None:
    line = assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), "--db", url, "--no-broker", "--port", "0",
                                         cwd=tmp_path), "--db", reason)
    assert line.startswith("edgefleet server: error: --db: cannot use "), line
    assert "s3cret-pw" not in line  # the database password is never echoed


def test_server_trust_key_missing(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), "--trust-key", "/nonexistent.pem", "--no-broker",
                                  "--port", "0", cwd=tmp_path), "--trust-key", "/nonexistent.pem", "no such file")


@pytest.mark.parametrize("content, reason", [
    (b"hello, not a key\n", "not a PEM public key"),
    (b"\xff\xfe\x00binary", "not a PEM public key"),
])
def test_server_trust_key_not_a_public_key(tmp_path: Path, content: bytes, reason: str) -> None:
    key = tmp_path / "pub.pem"
    key.write_bytes(content)
    assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), "--trust-key", str(key), "--no-broker",
                                  "--port", "0", cwd=tmp_path), "--trust-key", reason)


def test_server_trust_key_private_key_is_refused(tmp_path: Path) -> None:
    from edgefleet import keys

    priv, _pub = keys.generate_keypair(tmp_path / "k")
    assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), "--trust-key", str(priv), "--no-broker",
                                  "--port", "0", cwd=tmp_path), "--trust-key", "not a PEM public key")


@pytest.mark.parametrize("option", ["--port", "--mqtt-port"])
@pytest.mark.parametrize("value", ["99999", "-1", "http"])
def test_server_port_out_of_range_is_refused(tmp_path: Path, option: str, value: str) -> None:
    assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), option, f"{value}", cwd=tmp_path, timeout=15),
                          option, "0..65535")
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_server_http_port_in_use(tmp_path: Path, busy_port: int) -> None:
    assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), "--no-broker", "--port", str(busy_port),
                                  cwd=tmp_path), "--port", f"127.0.0.1:{busy_port}", "address already in use")


def test_server_embedded_broker_port_in_use(tmp_path: Path, busy_port: int) -> None:
    assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), "--mqtt-port", str(busy_port), "--port", "0",
                                  cwd=tmp_path), "--mqtt-port", str(busy_port))


def test_server_unresolvable_host(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), "--no-broker", "--host", "no-such-host.invalid",
                                  "--port", "0", cwd=tmp_path), "--host", "no-such-host.invalid")


def test_server_mqtt_admin_password_file_missing(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), "--mqtt", "mqtt://127.0.0.1:1", "--mqtt-admin", "admin",
                                  "--mqtt-admin-password-file", str(tmp_path / "nope"), "--port", "0", cwd=tmp_path),
                          "--mqtt-admin-password-file", "no such file")


def test_server_mqtt_admin_without_mqtt(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), "--mqtt-admin", "admin", "--port", "0", cwd=tmp_path),
                          "--mqtt-admin", "--mqtt")


def test_server_wrong_dynsec_admin_password(tmp_path: Path) -> None:
    """A real Mosquitto with dynamic security refuses the admin login: one line, no traceback, exit."""
    from fleet_server.mqtt.dynsec import DynsecBroker
    from tests.support.mqtt_broker import free_port

    broker = DynsecBroker(tmp_path / "mosq", port=free_port(), admin_password="the-right-password").start()
    try:
        wrong = tmp_path / "admin-pw"
        wrong.write_text("a-wrong-password\n")
        line = assert_one_line_error(run_cli("server", "--data-dir", str(tmp_path / "d"), "--mqtt", broker.url, "--mqtt-admin", "admin",
                                             "--mqtt-admin-password-file", str(wrong), "--port", "0", cwd=tmp_path),
                                     "--mqtt-admin", f"127.0.0.1:{broker.port}")
        assert "a-wrong-password" not in line and "the-right-password" not in line
        assert "not authori" in line.lower() or "bad user name or password" in line.lower(), line
    finally:
        broker.stop()


# ---------------------------------------------------------------------------------- fleet verbs

@pytest.mark.parametrize("args, option, reason", [
    (["rollout", "start", "--model", "churn", "--steps", "abc"], "--steps", "'abc' is not a number"),
    (["rollout", "start", "--model", "churn", "--steps", "10,x"], "--steps", "'x' is not a number"),
    (["rollout", "start", "--model", "churn", "--steps", "10,,100"], "--steps", "comma-separated"),
    (["rollout", "start", "--model", "churn", "--steps", "50,10,100"], "--steps", "must rise"),
    (["rollout", "start", "--model", "churn", "--steps", "10,50"], "--steps", "last step must be 100"),
    (["rollout", "start", "--model", "churn", "--steps", "0,100"], "--steps", "above 0"),
    (["rollout", "start", "--model", "churn", "--steps", "10,inf"], "--steps", "at most 100"),
    (["rollout", "start", "--model", "churn", "--version", "abc"], "--version", "not an integer"),
    (["rollout", "start", "--model", "churn", "--version", "-5"], "--version", "positive integer"),
    (["rollout", "start", "--model", "churn", "--version", "2.5"], "--version", "not an integer"),
    (["rollout", "start", "--model", "churn", "--max-failure-ratio", "abc"], "--max-failure-ratio", "not a number"),
    (["rollout", "start", "--model", "churn", "--max-failure-ratio", "1.5"], "--max-failure-ratio", "at most 1"),
    (["rollout", "start", "--model", "churn", "--max-failure-ratio", "nan"], "--max-failure-ratio", "finite"),
    (["rollout", "start", "--model", "churn", "--groups", "a,,b"], "--groups", "empty name"),
    (["rollout", "start"], "--model", "model name"),
    (["models", "show", "churn", "--version", "0"], "--version", "positive integer"),
    (["devices", "token", "--tags", ","], "--tags", "empty name"),
    (["devices", "token", "--ttl", "-5"], "--ttl", "unrecognized"),
    (["compile", "m.joblib", "--sample", "s.csv", "--name", "n", "--version", "v1", "--key", "k", "--out", "o"], "--version", "not an integer"),
    (["compile", "m.joblib", "--sample", "s.csv", "--name", "n", "--version", "1", "--key", "k", "--out", "o", "--parity-rows", "-3"],
     "--parity-rows", "positive integer"),
    (["compile", "m.joblib", "--sample", "s.csv", "--name", "n", "--version", "1", "--key", "k", "--out", "o", "--tolerance", "x"],
     "--tolerance", "not a number"),
    (["agent", "run", "--credential", "c.json", "--data-dir", "d", "--sample-rate", "2"], "--sample-rate", "at most 1"),
    (["agent", "run", "--credential", "c.json", "--data-dir", "d", "--poll-seconds", "0"], "--poll-seconds", "above 0"),
])
def test_fleet_verb_bad_option(tmp_path: Path, args: list[str], option: str, reason: str) -> None:
    # no server is running at the default URL: a refused option must be refused before any request
    proc = run_cli(*args, "--server", "http://127.0.0.1:1", cwd=tmp_path) if args[0] in ("rollout", "models", "devices") \
        else run_cli(*args, cwd=tmp_path)
    assert_one_line_error(proc, option, reason)
    assert "cannot reach the fleet server" not in proc.stderr


def test_good_options_still_reach_the_server(tmp_path: Path) -> None:
    """The validators do not refuse what is valid: the same verb gets as far as the (absent) server."""
    proc = subprocess.run([str(EDGEFLEET), "rollout", "start", "--model", "churn", "--steps", "5, 25,100", "--version", "3",
                           "--groups", "eu,us", "--max-failure-ratio", "0.1", "--server", "http://127.0.0.1:1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EDGEFLEET_ADMIN_TOKEN": "t"})
    assert_one_line_error(proc, "127.0.0.1:1", "cannot reach the fleet server")


@pytest.mark.parametrize("args, option", [
    (["server", "--mqtt", "junk"], "--mqtt"),
    (["server", "--mqtt", "mqtt://127.0.0.1:99999"], "--mqtt"),
    (["server", "--public-url", "devices.example"], "--public-url"),
    (["rollout", "status", "--server", "junk"], "--server"),
    (["agent", "enroll", "--server", "ftp://x", "--token", "t", "--device-id", "d", "--out", "c.json"], "--server"),
    (["agent", "run", "--credential", "c.json", "--data-dir", "d", "--mqtt", "mqtt://:1883"], "--mqtt"),
])
def test_bad_urls_are_refused(tmp_path: Path, args: list[str], option: str) -> None:
    proc = run_cli(*args, cwd=tmp_path, timeout=15)
    assert_one_line_error(proc, option, "URL" if "99999" not in args[-1] else "out of range")
    assert not (tmp_path / "fleet-data").exists()


# ------------------------------------------------------------ a broker that is down while serving

def _serve_with_unreachable_broker(tmp_path: Path, *global_opts: str, seconds: float = 4.5) -> tuple[str, str, int, dict]:
    """``edgefleet server --mqtt mqtt://127.0.0.1:<closed>``: it serves (devices can poll over HTTP),
    says why the broker is unreachable, and /readyz names the broker; SIGTERM stops it cleanly."""
    import json
    import signal
    import time
    import urllib.error
    import urllib.request

    from tests.support.mqtt_broker import free_port

    closed, http = free_port(), free_port()
    proc = subprocess.Popen([str(EDGEFLEET), *global_opts, "server", "--data-dir", str(tmp_path / "d"), "--port", str(http),
                             "--mqtt", f"mqtt://127.0.0.1:{closed}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={"PATH": "/usr/bin:/bin:/usr/sbin", "HOME": str(tmp_path)})
    ready: dict = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not ready:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=2)
                ready = {"code": 200}
            except urllib.error.HTTPError as e:
                ready = {"code": e.code, **json.loads(e.read())}
            except OSError:
                time.sleep(0.2)
        # paho retries after 1, 2, 4 .. 10 s meanwhile, each attempt failing the same way: 4.5 s sees the two retries at
        # +1 and +3 s after the first failure (8 s saw a third at +7 s, for 3.5 s more of every run)
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    return out, err, proc.returncode, {**ready, "port": closed}


def test_server_with_unreachable_mqtt_logs_the_cause_once(tmp_path: Path) -> None:
    out, err, code, ready = _serve_with_unreachable_broker(tmp_path)
    assert "Traceback" not in out + err, err
    assert code == 0, (code, err)
    assert ready["code"] == 503 and ready["failing"] == ["broker"], ready
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected the failure once, got:\n{err}"
    assert "ERROR" in lines[0] and f"127.0.0.1:{ready['port']}" in lines[0] and "refused" in lines[0].lower(), lines[0]


def test_log_format_json_gives_one_object_a_line(tmp_path: Path) -> None:
    import json

    out, err, code, ready = _serve_with_unreachable_broker(tmp_path, "--log-format", "json", "--log-level", "info", seconds=3.0)
    assert code == 0 and "Traceback" not in out + err, err
    docs = [json.loads(ln) for ln in err.splitlines() if ln.strip()]
    assert docs and all(set(d) >= {"ts", "level", "logger", "message"} for d in docs), docs
    broker = [d for d in docs if d["logger"] == "fleet_server.mqtt.bridge"]
    assert len(broker) == 1 and broker[0]["level"] == "ERROR" and str(ready["port"]) in broker[0]["message"], docs
    assert docs[0]["ts"].endswith("Z")


def test_bad_log_level_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("--log-level", "loud", "server", "--no-broker", cwd=tmp_path)
    assert_one_line_error(proc, "--log-level", "loud")


def test_keys_generate_into_an_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    proc = run_cli("keys", "generate", "--out", str(blocker / "keys"), cwd=tmp_path)
    assert_one_line_error(proc, "--out", "cannot write the key pair")
