"""A newcomer's first mistakes get one line naming the option/field and the reason (issue 12, "Tracebacks instead of one line").

Each case runs the real ``edgefleet`` console script (or ``main()`` in a fresh interpreter when a
dependency must be hidden), asserts one stderr line, no traceback, and the field and reason.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.cli.conftest import EDGEFLEET, ROOT, RunningServer, cli_env, one_line_error, run_cli

# ------------------------------------------------------------------------------------------ ports

def test_http_port_in_use_names_port_and_option(tmp_path: Path, busy_port: int) -> None:
    line = one_line_error(run_cli("server", "--no-broker", "--port", str(busy_port), cwd=tmp_path),
                          f"127.0.0.1:{busy_port}", "address already in use", "choose another port with --port")
    assert line.startswith("edgefleet server: error: --port:"), line


def test_mqtt_port_in_use_names_port_and_option(tmp_path: Path, busy_port: int) -> None:
    line = one_line_error(run_cli("server", "--mqtt-port", str(busy_port), "--port", "0", cwd=tmp_path),
                          f"127.0.0.1:{busy_port}", "address already in use", "choose another port with --mqtt-port")
    assert line.startswith("edgefleet server: error: --mqtt-port:"), line
    assert len(line) < 300, line  # not amqtt's paragraph


# ----------------------------------------------------------------------------- broken pipe (| head)

def test_inspect_json_into_a_closed_pipe_is_quiet(tmp_path: Path, make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle(1)
    proc = subprocess.Popen([str(EDGEFLEET), "inspect", str(bundle), "--json"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env(tmp_path))
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before edgefleet writes a byte: every write is EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == "", err


def test_inspect_json_piped_to_head(tmp_path: Path, make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle(1)
    proc = subprocess.run(f"'{EDGEFLEET}' inspect '{bundle}' --json | head -c 10", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=cli_env(tmp_path))
    assert len(proc.stdout) == 10 and proc.stdout.startswith("{"), proc.stdout
    assert proc.stderr == "", proc.stderr


# ------------------------------------------------------------------------------ missing extras

BLOCK = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from edgefleet_cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def run_without(modules: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh interpreter that cannot import ``modules``, as on an install without that extra."""
    return subprocess.run([sys.executable, "-c", BLOCK, modules, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**cli_env(cwd), "PYTHONPATH": str(ROOT)})


SERVER_EXTRA = "flask,sqlalchemy,alembic,waitress,amqtt,psycopg,aiomqtt,prometheus_client"
COMPILER_EXTRA = "sklearn,pandas,joblib,skl2onnx,onnx,jsonschema"


def test_server_without_the_server_extra(tmp_path: Path) -> None:
    line = one_line_error(run_without(SERVER_EXTRA, "server", "--no-broker", "--port", "0", cwd=tmp_path),
                          "install edgefleet[server]", "`edgefleet server`", "not installed")
    assert any(m in line for m in SERVER_EXTRA.split(",")), line


def test_compile_without_the_compiler_extra(tmp_path: Path, keypair: dict[str, Any]) -> None:
    (tmp_path / "m.joblib").write_bytes(b"not used")
    (tmp_path / "s.csv").write_text("a,b\n1,2\n")
    line = one_line_error(run_without(COMPILER_EXTRA, "compile", "m.joblib", "--sample", "s.csv", "--name", "churn", "--version", "1",
                                      "--key", str(keypair["private_path"]), "--out", "b", cwd=tmp_path),
                          "install edgefleet[compiler]", "`edgefleet compile`")
    assert any(repr(m) in line for m in COMPILER_EXTRA.split(",")), line


def test_a_device_install_still_has_a_cli(tmp_path: Path) -> None:
    """Without server and compiler extras, the device verbs and --help still work; retrain names its extra."""
    hidden = f"{SERVER_EXTRA},{COMPILER_EXTRA}"
    helped = run_without(hidden, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "agent" in helped.stdout, helped.stderr
    agent = run_without(hidden, "agent", "run", "--help", cwd=tmp_path)
    assert agent.returncode == 0 and "--credential" in agent.stdout, agent.stderr


# ------------------------------------------------------------------------------------ model names

PATTERN = "^[a-z0-9][a-z0-9._-]{0,63}$"


def test_compile_refuses_a_bad_name_before_any_work(tmp_path: Path) -> None:
    line = one_line_error(run_cli("compile", "m.joblib", "--sample", "s.csv", "--name", "bad name/x", "--version", "1",
                                  "--key", "k.pem", "--out", "b", cwd=tmp_path), "--name", "'bad name/x'", PATTERN, status=2)
    assert line.startswith("edgefleet compile: error:"), line


def test_models_show_with_a_bad_name_is_one_line(tmp_path: Path) -> None:
    one_line_error(run_cli("models", "show", "bad name/x", "--server", "http://127.0.0.1:1", cwd=tmp_path), "name", PATTERN)


def test_the_cli_rule_is_the_manifest_schema_rule() -> None:
    from edgefleet.manifest_schema import schema
    from edgefleet_cli.args import manifest_name_pattern, model_name

    assert manifest_name_pattern() == schema()["properties"]["name"]["pattern"] == PATTERN
    for good in ("churn", "churn-eu.v2", "a" * 64, "0_x"):
        assert model_name(good) == good
    import argparse

    for bad in ("bad name/x", "Churn", "-x", "a" * 65, "", "é", "churn\n"):
        with pytest.raises(argparse.ArgumentTypeError):
            model_name(bad)


def _signed_bundle_named(name: str, lr_result: Any, keypair: dict[str, Any], out: Path) -> Path:
    """A correctly signed bundle whose manifest carries ``name`` (the compiler would refuse to sign it)."""
    from edgefleet import keys
    from edgefleet.bundle_format import MANIFEST, SIGNATURE, canonical_json, pack

    manifest = json.loads(canonical_json(lr_result.manifest))
    manifest["name"] = name
    body = canonical_json(manifest)
    files = {MANIFEST: body, SIGNATURE: base64.b64encode(keys.sign(keypair["private"], body)) + b"\n"}
    files.update({k: v for k, v in lr_result.files.items() if k.startswith("artifacts/")})
    out.write_bytes(pack(files))
    return out


def test_server_refuses_a_signed_bundle_with_a_bad_name(server_in_cwd: RunningServer, lr_result: Any, keypair: dict[str, Any]) -> None:
    srv = server_in_cwd
    _signed_bundle_named("bad name/x", lr_result, keypair, srv.cwd / "bad.tar")
    line = one_line_error(srv.cli("publish", "bad.tar"), "name", "HTTP 400")
    assert "500" not in line
    listed = srv.cli("models", "list", "--json")
    assert json.loads(listed.stdout)["models"] == [], listed.stdout  # nothing registered: both web pages stay intact
    status, body = srv.api("POST", "/api/v1/rollouts", {"model": "bad name/x", "steps": [100]})
    assert status == 400 and body["error"].startswith("model:") and PATTERN in body["error"], (status, body)


# ------------------------------------------------------------------------- --version, help, usage

def test_version(tmp_path: Path) -> None:
    from importlib import metadata

    proc = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"edgefleet {metadata.version('edgefleet')}", proc


def test_rollout_start_help_is_the_start_help(tmp_path: Path) -> None:
    proc = run_cli("rollout", "start", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: edgefleet rollout start"), proc.stdout
    assert "--steps" in proc.stdout and "--max-failure-ratio" in proc.stdout and "--watch" not in proc.stdout


def test_unknown_option_is_the_verbs_usage_error(tmp_path: Path) -> None:
    line = one_line_error(run_cli("publish", "b.tar", "--data-dir", "d", cwd=tmp_path), "--data-dir", "unrecognized", status=2)
    assert line.startswith("edgefleet publish: error:") and "edgefleet publish --help" in line, line
    line = one_line_error(run_cli("rollout", "status", "--bogus", cwd=tmp_path), "--bogus", status=2)
    assert line.startswith("edgefleet rollout status: error:"), line


# ----------------------------------------------------------------------------- agent / device alias

def test_agent_is_the_device_group_and_device_is_a_hidden_alias(tmp_path: Path) -> None:
    top = run_cli("--help", cwd=tmp_path).stdout
    assert "\n    agent " in top and "\n    device " not in top and "devices" in top, top
    assert run_cli("agent", "run", "--help", cwd=tmp_path).stdout.startswith("usage: edgefleet agent run")
    new = run_cli("agent", "enroll", "--server", "http://127.0.0.1:1", "--token", "t", "--device-id", "gw", "--out", "c.json", cwd=tmp_path)
    old = run_cli("device", "enroll", "--server", "http://127.0.0.1:1", "--token", "t", "--device-id", "gw", "--out", "c.json", cwd=tmp_path)
    one_line_error(new, "cannot reach the fleet server")
    lines = [ln for ln in old.stderr.splitlines() if ln.strip()]
    assert old.returncode == 1 and "Traceback" not in old.stderr and len(lines) == 2, old.stderr
    assert "WARNING" in lines[0] and "`edgefleet device ...` is now `edgefleet agent ...`" in lines[0], lines
    assert lines[1] == new.stderr.strip(), lines


# --------------------------------------------------------------------------------------- --output

@pytest.mark.parametrize("where, reason", [("/nonexistent/x.jsonl", "/nonexistent does not exist"), (".", "is a folder")])
def test_score_output_that_cannot_be_written(tmp_path: Path, where: str, reason: str) -> None:
    line = one_line_error(run_cli("score", "b.tar", "--pubkey", "k.pem", "--input", "in.csv", "--output", where, cwd=tmp_path),
                          "--output", reason, status=2)
    assert line.startswith("edgefleet score: error: argument --output:"), line
