"""Fleet verbs against a real ``edgefleet server`` (issue 12, "Missing everywhere"): text by default,
the server's JSON with ``--json``; ``alerts``, ``policies`` and ``rollout approve`` as thin API calls;
settings from flag > environment > config file > default.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any, Callable

from tests.cli.conftest import RunningServer, cli_env, one_line_error, run_cli


def _publish(srv: RunningServer, bundle: Path) -> None:
    shutil.copy(bundle, srv.cwd / bundle.name)
    out = srv.cli("publish", bundle.name)
    assert out.returncode == 0, out.stderr


def _enroll(srv: RunningServer, device_id: str, group: str = "stores") -> None:
    token = srv.cli("devices", "token", "--group", group).stdout.strip()
    assert token, "no enrollment token"
    out = srv.cli("agent", "enroll", "--server", srv.url, "--token", token, "--device-id", device_id, "--out", f"{device_id}.json")
    assert out.returncode == 0, out.stderr


def test_text_by_default_json_on_request(server_in_cwd: RunningServer, make_bundle: Callable[..., Path]) -> None:
    srv = server_in_cwd
    _publish(srv, make_bundle(1))
    _enroll(srv, "gw-01")

    text = srv.cli("models", "list")
    assert text.returncode == 0 and text.stdout.split()[:2] == ["churn", "v1"], text.stdout
    doc = json.loads(srv.cli("models", "list", "--json").stdout)
    assert [v["version"] for v in doc["models"][0]["versions"]] == [1]
    shown = srv.cli("models", "show", "churn")
    assert shown.stdout.startswith("churn v1  sha256 "), shown.stdout
    assert json.loads(srv.cli("models", "show", "churn", "--version", "1", "--json").stdout)["version"] == 1

    listed = srv.cli("devices", "list")
    assert listed.stdout.split()[:3] == ["gw-01", "stores", "v-"], listed.stdout
    assert [d["device_id"] for d in json.loads(srv.cli("devices", "list", "--json").stdout)["devices"]] == ["gw-01"]
    show = srv.cli("devices", "show", "gw-01")
    assert show.returncode == 0 and show.stdout.startswith("gw-01 "), show.stdout
    assert not show.stdout.lstrip().startswith("{")  # text now, as models show
    assert json.loads(srv.cli("devices", "show", "gw-01", "--json").stdout)["device_id"] == "gw-01"

    started = srv.cli("rollout", "start", "--model", "churn", "--steps", "100", "--json")
    assert started.returncode == 0, started.stderr
    rid = json.loads(started.stdout)["id"]
    status = srv.cli("rollout", "status", str(rid))
    assert status.stdout.startswith(f"rollout {rid}: churn v1 "), status.stdout
    assert [r["id"] for r in json.loads(srv.cli("rollout", "status", "--json").stdout)["rollouts"]] == [rid]
    paused = json.loads(srv.cli("rollout", "pause", str(rid), "--json").stdout)
    assert paused["id"] == rid

    one_line_error(srv.cli("devices", "show", "nosuch"), "nosuch", "not enrolled")
    one_line_error(srv.cli("models", "show", "nosuch"), "nosuch")


def test_alerts_policies_and_approve(server_in_cwd: RunningServer, make_bundle: Callable[..., Path]) -> None:
    srv = server_in_cwd
    _publish(srv, make_bundle(1))
    _enroll(srv, "gw-01")

    none = srv.cli("alerts", "list")
    assert none.returncode == 0 and none.stdout.strip() == "no alerts", none.stdout
    assert json.loads(srv.cli("alerts", "list", "--model", "churn", "--state", "firing", "--json").stdout) == {"alerts": []}

    shown = srv.cli("policies", "show", "churn")
    assert shown.returncode == 0 and shown.stdout.startswith("monitoring policy of churn (defaults):"), shown.stdout
    changed = srv.cli("policies", "set", "churn", "psi_threshold=0.3", "min_count=50")
    assert changed.returncode == 0, changed.stderr
    assert "psi_threshold = 0.3" in changed.stdout and "min_count = 50" in changed.stdout, changed.stdout
    stored = json.loads(srv.cli("policies", "show", "churn", "--json").stdout)
    assert stored["stored"] is True and stored["policy"]["psi_threshold"] == 0.3
    one_line_error(srv.cli("policies", "set", "churn", "psi_thresold=0.3"), "policy.psi_thresold", "unknown field")
    one_line_error(srv.cli("policies", "set", "churn", "psi_threshold"), "KEY=VALUE")

    # a challenger registered with approval_required (as `edgefleet retrain --approve-required` uploads it)
    req = urllib.request.Request(srv.url + "/api/v1/models", data=make_bundle(2).read_bytes(), method="POST")
    req.add_header("Authorization", f"Bearer {srv.token}")
    req.add_header("X-Edgefleet-Provenance", json.dumps({"approval_required": True, "rollout_request": {"steps": [100]}}))
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 201
    approved = srv.cli("rollout", "approve", "churn", "2", "--by", "alice")
    assert approved.returncode == 0, approved.stderr
    lines = approved.stdout.splitlines()
    assert lines[0] == "approved churn v2" and lines[1].startswith("rollout ") and " churn v2 " in lines[1], approved.stdout
    prov = json.loads(srv.cli("models", "show", "churn", "--version", "2", "--json").stdout)["provenance"]
    assert prov["approval"]["state"] == "approved" and prov["approval"]["by"] == "alice", prov
    one_line_error(srv.cli("rollout", "approve", "churn", "2"), "approval", "not waiting for approval")


def test_settings_precedence_flag_env_config(server_in_cwd: RunningServer, tmp_path: Path) -> None:
    srv = server_in_cwd
    elsewhere = tmp_path / "elsewhere"  # no ./fleet-data here: the token must come from the config file or env
    elsewhere.mkdir()
    (elsewhere / "edgefleet.toml").write_text(f'server = "{srv.url}"\nadmin_token = "{srv.token}"\n')
    env = cli_env(elsewhere)
    assert run_cli("models", "list", "--json", cwd=elsewhere, env=env).returncode == 0  # config only

    dead = "http://127.0.0.1:1"
    one_line_error(run_cli("models", "list", cwd=elsewhere, env={**env, "EDGEFLEET_SERVER": dead}), "127.0.0.1:1")  # env > config
    ok = run_cli("models", "list", "--server", srv.url, cwd=elsewhere, env={**env, "EDGEFLEET_SERVER": dead})  # flag > env
    assert ok.returncode == 0, ok.stderr
    one_line_error(run_cli("models", "list", cwd=elsewhere, env={**env, "EDGEFLEET_ADMIN_TOKEN": "adm_wrong"}), "not the admin token")

    # the user config (XDG_CONFIG_HOME) is used when the cwd has none; a token file flag beats the config's token
    user = tmp_path / "xdg" / "edgefleet"
    user.mkdir(parents=True)
    shutil.move(str(elsewhere / "edgefleet.toml"), user / "config.toml")
    assert run_cli("models", "list", cwd=elsewhere, env={**env, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}).returncode == 0
    (elsewhere / "bad-token").write_text("adm_wrong\n")
    one_line_error(run_cli("models", "list", "--token-file", "bad-token", cwd=elsewhere,
                           env={**env, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}), "not the admin token")


def test_malformed_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "edgefleet.toml").write_text('server = "http://127.0.0.1:8080"\nadmin_token = adm_unquoted\n')
    line = one_line_error(run_cli("models", "list", cwd=tmp_path), str(tmp_path / "edgefleet.toml"), "line 2", "not valid TOML")
    assert line.startswith("edgefleet: error: config file "), line
    (tmp_path / "edgefleet.toml").write_text('\n\nsrever = "http://x"\n')
    one_line_error(run_cli("models", "list", cwd=tmp_path), "line 3", "unknown key 'srever'")
    (tmp_path / "edgefleet.toml").write_text('server = "ftp://x"\n')
    one_line_error(run_cli("devices", "list", cwd=tmp_path), "line 1", "server", "not a http:// or https:// URL")
    (tmp_path / "edgefleet.toml").write_text('pubkey = 3\n')
    one_line_error(run_cli("verify", "b.tar", cwd=tmp_path), "line 1", "pubkey must be a non-empty string")
    # verbs that need no server settings do not read it
    keys = run_cli("keys", "generate", "--out", "k", cwd=tmp_path)
    assert keys.returncode == 0, keys.stderr


def test_verify_and_score_take_pubkey_from_config(tmp_path: Path, make_bundle: Callable[..., Path], keypair: dict[str, Any],
                                                   lr_result: Any) -> None:
    shutil.copy(keypair["public_path"], tmp_path / "trusted.pem")
    (tmp_path / "conf" / "edgefleet").mkdir(parents=True)
    (tmp_path / "conf" / "edgefleet" / "config.toml").write_text('pubkey = "../../trusted.pem"\n')  # relative to the file
    env = cli_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "conf"))
    ok = run_cli("verify", str(make_bundle(1)), cwd=tmp_path, env=env)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: churn v1"), ok.stderr
    one_line_error(run_cli("verify", str(make_bundle(1)), cwd=tmp_path), "--pubkey")
    (tmp_path / "in.jsonl").write_text(json.dumps(lr_result.manifest["canary"]["rows"][0]["input"]) + "\n")
    scored = run_cli("score", str(make_bundle(1)), "--input", "in.jsonl", cwd=tmp_path, env=env)
    assert scored.returncode == 0 and '"probability"' in scored.stdout, scored.stderr
    one_line_error(run_cli("score", str(make_bundle(1)), "--input", "in.jsonl", cwd=tmp_path), "--pubkey", "edgefleet.toml")


def test_outcomes_upload_joins_predictions(server_in_cwd: RunningServer, make_bundle: Callable[..., Path], lr_result: Any) -> None:
    import time

    srv = server_in_cwd
    _publish(srv, make_bundle(1))
    record = lr_result.manifest["canary"]["rows"][0]["input"]
    now = time.time() - 60
    msgs = [{"id": f"p{i:031d}", "kind": "prediction", "created": now + i,
             "body": {"device_id": "gw-01", "ts": now + i, "model": "churn", "model_version": 1, "score": 0.5, "label": 1,
                      "sample_rate": 1.0, "entity_id": f"cust-{i}", "features": record}} for i in range(3)]
    status, body = srv.api("POST", "/api/v1/devices/gw-01/telemetry", {"device_id": "gw-01", "messages": msgs})
    assert status == 200 and body["accepted"] == 3, body

    (srv.cwd / "labels.csv").write_text("customerID,Churn\ncust-0,1\ncust-1,0\nunknown,1\n")
    up = srv.cli("outcomes", "upload", "labels.csv", "--model", "churn", "--entity-column", "customerID", "--label-column", "Churn")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "uploaded 3 outcomes from " + str(srv.cwd / "labels.csv") + ": 3 stored, 0 already there (source labels-upload)"
    time.sleep(1.0 - time.time() % 1.0 + 0.01)  # into the next whole second: the default observed_at differs, the message ids must not
    again = json.loads(srv.cli("outcomes", "upload", "labels.csv", "--entity-column", "customerID", "--label-column", "Churn",
                               "--model", "churn", "--json").stdout)
    assert again["accepted"] == 0 and again["duplicates"] == 3, again  # idempotent: same content, same ids

    status, labeled = srv.api("GET", "/api/v1/models/churn/labeled")
    assert status == 200, labeled
    assert sorted((r["entity_id"], str(r["label"])) for r in labeled["rows"]) == [("cust-0", "1"), ("cust-1", "0")], labeled

    one_line_error(srv.cli("outcomes", "upload", "labels.csv", "--entity-column", "customer_id"), "--entity-column", "'customer_id'",
                   "customerID, Churn")
    (srv.cwd / "bad.jsonl").write_text('{"entity_id": "a", "label": 1}\nnot json\n')
    one_line_error(srv.cli("outcomes", "upload", "bad.jsonl"), "line 2", "not JSON")
