"""The agent after damage: torn state, a flipped active artifact, a lost model, bad drop-folder
files, and a bundle signed with the wrong key role. Real HTTP protocol server, real store."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from edgefleet import keys
from runtimes.python.agent import Agent, AgentConfig
from runtimes.python.errors import DeviceError
from tests.fleet_server.conftest import make_server  # noqa: F401 - a fixture
from tests.runtimes.test_agent import DEVICE, assignment, make_agent, server, start, wait_for  # noqa: F401 - server is a fixture
from tests.support.protocol_server import ProtocolServer


def _stop(agent: Agent, t: threading.Thread) -> None:
    agent.stop()
    t.join(10)
    assert not t.is_alive()


def _install_v1_v2(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any], make_bundle: Callable[..., Path]) -> dict[str, Any]:
    agent = make_agent(tmp_path, server.url, keypair)
    t = start(agent)
    try:
        server.assignments[DEVICE] = assignment(server, make_bundle(1), 1, 1, keypair["private"])
        wait_for(lambda: agent.scorer and agent.scorer.version == 1, what="v1")
        env2 = assignment(server, make_bundle(2), 2, 2, keypair["private"])
        server.assignments[DEVICE] = env2
        wait_for(lambda: agent.scorer.version == 2, what="v2")
    finally:
        _stop(agent, t)
    return env2


@pytest.mark.parametrize("damage", ['{"active": "churn-v2-448e', None, "[]", '{"active_version": "2"}'])
def test_torn_state_keeps_the_model_and_still_refuses_a_downgrade(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any],
                                                                  make_bundle: Callable[..., Path], damage: str | None) -> None:
    _install_v1_v2(tmp_path, server, keypair, make_bundle)
    state = tmp_path / "device" / "models" / "state.json"
    if damage is None:
        state.unlink()
    elif damage.startswith('{"active_version"'):
        st = json.loads(state.read_text())
        st["active_version"] = "2"
        state.write_text(json.dumps(st))
    else:
        state.write_text(damage)
    agent = make_agent(tmp_path, server.url, keypair)  # must not raise (was a TypeError for "2")
    assert agent.scorer is not None and agent.scorer.version == 2
    status = agent.status()
    assert status["active_version"] == 2 and status["store"]["floor"] == 2 and status["store"]["recovered"]
    t = start(agent)
    try:
        server.assignments[DEVICE] = assignment(server, make_bundle(1, name="v1-again.tar"), 1, 3, keypair["private"])  # not ordered
        wait_for(lambda: agent.last_install and agent.last_install.get("version") == 1 and "refused" in agent.last_install["result"],
                 what="the downgrade refused")
        assert agent.scorer.version == 2
        wait_for(lambda: any(s.get("active_version") == 2 and s["store"]["recovered"] for s in server.statuses), what="status says so")
    finally:
        _stop(agent, t)


def test_flipped_active_artifact_is_reported_and_repaired(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any],
                                                          make_bundle: Callable[..., Path]) -> None:
    _install_v1_v2(tmp_path, server, keypair, make_bundle)
    models = tmp_path / "device" / "models"
    active = models / "slots" / json.loads((models / "state.json").read_text())["active"] / "artifacts" / "model.onnx"
    data = bytearray(active.read_bytes())
    data[len(data) // 3] ^= 0x04
    active.write_bytes(bytes(data))
    server.statuses.clear()
    agent = make_agent(tmp_path, server.url, keypair)
    assert agent.scorer is not None and agent.scorer.version == 1, "falls back to the verified v1"
    status = agent.status()
    assert status["active_version"] == 1 and status["fallback"]["from_version"] == 2 and status["fallback"]["to_version"] == 1
    assert "re-installing" in agent.last_install["result"]  # type: ignore[index]
    t = start(agent)
    try:
        wait_for(lambda: agent.scorer.version == 2, what="v2 re-installed from the last installed assignment")
        wait_for(lambda: any(s.get("active_version") == 2 and s.get("fallback") is None for s in server.statuses), what="repaired status")
        first = server.statuses[0]
        assert first["active_version"] == 1 and first["fallback"]["from_version"] == 2, "the server saw the fallback first"
    finally:
        _stop(agent, t)


def test_a_device_with_no_model_installs_the_retained_assignment(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any],
                                                                 make_bundle: Callable[..., Path]) -> None:
    import shutil

    _install_v1_v2(tmp_path, server, keypair, make_bundle)
    shutil.rmtree(tmp_path / "device" / "models")  # what the old store did on a torn state
    (tmp_path / "device" / "agent.json").write_text(json.dumps({"serial": 2}))  # the serial is kept: a "replay"
    agent = make_agent(tmp_path, server.url, keypair)
    assert agent.scorer is None
    t = start(agent)
    try:
        wait_for(lambda: agent.scorer and agent.scorer.version == 2, what="the retained serial-2 assignment installed")
    finally:
        _stop(agent, t)


def test_replayed_assignment_is_still_ignored_when_the_model_is_fine(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any],
                                                                     make_bundle: Callable[..., Path]) -> None:
    env2 = _install_v1_v2(tmp_path, server, keypair, make_bundle)
    agent = make_agent(tmp_path, server.url, keypair)
    gets_before = sum(e["path"].startswith("/api/v1/artifacts/") for e in server.log)
    agent._handle_assignment(json.dumps(env2).encode())
    agent._handle_assignment(json.dumps(assignment(server, make_bundle(1, name="old.tar"), 1, 1, keypair["private"])).encode())
    assert sum(e["path"].startswith("/api/v1/artifacts/") for e in server.log) == gets_before, "no download for a replay"
    assert agent.scorer is not None and agent.scorer.version == 2
    agent.outbox.close()


def test_bad_drop_folder_files_are_rejected_and_the_agent_keeps_running(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any],
                                                                         make_bundle: Callable[..., Path]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    agent = make_agent(tmp_path, server.url, keypair, input_dir=inbox)
    agent.scorer = agent.store.install(make_bundle(1)).scorer
    rec = agent.scorer.manifest["canary"]["rows"][0]["input"]  # type: ignore[union-attr]
    (inbox / "latin1.jsonl").write_bytes(json.dumps(rec).encode() + b"\n" + b'{"gender": "M\xe4nnlich"}\n')
    (inbox / "garbage.jsonl").write_bytes(b"\x00\x01 not json at all\n[1, 2]\n")
    (inbox / "dir.jsonl").mkdir()
    (inbox / "good.jsonl").write_text(json.dumps(rec) + "\n" + "not json\n" + json.dumps({**rec, "tenure": "abc"}) + "\n" + "[1]\n")
    t = start(agent)
    try:
        # one pass takes the files in name order (latin1.jsonl last), so wait for every one of them
        wait_for(lambda: (inbox / "done" / "good.jsonl").exists() and all((inbox / "rejected" / f"{n}.reason").exists()
                                                                            for n in ("dir.jsonl", "garbage.jsonl", "latin1.jsonl")), what="inbox processed")
        assert t.is_alive()
        rejected = inbox / "rejected"
        for name in ("latin1.jsonl", "garbage.jsonl", "dir.jsonl"):
            assert (rejected / name).exists() and not (inbox / name).exists(), name
        assert "not UTF-8" in (rejected / "latin1.jsonl.reason").read_text()
        assert "no line" in (rejected / "garbage.jsonl.reason").read_text()
        assert "not a regular file" in (rejected / "dir.jsonl.reason").read_text()
        lines = [json.loads(x) for x in (inbox / "scored" / "good.jsonl").read_text().splitlines()]
        assert "probability" in lines[0] and [("error" in x) for x in lines] == [False, True, True, True]
        assert "tenure" in lines[2]["error"]
        assert agent.inputs_rejected == 3
    finally:
        _stop(agent, t)
    (inbox / "again.jsonl").write_bytes(b"\xff\xfe")  # restart with a bad file waiting: no crash
    agent2 = make_agent(tmp_path, server.url, keypair, input_dir=inbox)
    t2 = start(agent2)
    try:
        wait_for(lambda: (inbox / "rejected" / "again.jsonl.reason").exists(), what="rejected after restart")
        assert t2.is_alive()
    finally:
        _stop(agent2, t2)


def _pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture()
def server_key(tmp_path: Path) -> Any:
    keys.generate_keypair(tmp_path / "server-key")
    return keys.load_private_key(tmp_path / "server-key" / "private.pem")


def test_a_bundle_signed_with_the_assignment_key_is_refused(tmp_path: Path, server: ProtocolServer, keypair: dict[str, Any],
                                                            make_bundle: Callable[..., Path], server_key: Any) -> None:
    cred = {"device_id": DEVICE, "token": "t", "server": server.url,
            "publisher_keys": [_pem(keypair["public"])], "assignment_keys": [_pem(server_key.public_key())]}
    path = tmp_path / "cred.json"
    path.write_text(json.dumps(cred))
    cfg = AgentConfig.from_credential(path, data_dir=tmp_path / "device", poll_seconds=0.3, status_seconds=0.5, tick_seconds=0.05,
                                      backoff_base=0.05, backoff_cap=0.5)
    assert [keys.key_id(k) for k in cfg.trusted_keys] == [keys.key_id(keypair["public"])], "publisher keys only"
    agent = Agent(cfg)

    from compiler.bundle import bundle_files
    from edgefleet.bundle_format import open_bundle, pack

    def by_server_key(version: int) -> Path:
        b = open_bundle(make_bundle(version))
        manifest = json.loads(b.manifest_bytes)
        manifest["key_id"] = keys.key_id(server_key.public_key())
        files = bundle_files(manifest, [], server_key)
        files.update({k: v for k, v in b.files.items() if k.startswith("artifacts/")})
        out = tmp_path / f"server-signed-v{version}.tar"
        out.write_bytes(pack(files))
        return out

    t = start(agent)
    try:
        server.assignments[DEVICE] = assignment(server, by_server_key(1), 1, 1, server_key)
        wait_for(lambda: agent.last_install and "refused" in agent.last_install["result"], what="the server-key bundle refused")
        assert agent.scorer is None
        server.assignments[DEVICE] = assignment(server, make_bundle(1), 1, 2, keypair["private"])  # publisher signs an assignment
        wait_for(lambda: "unknown key" in str(agent.last_install), what="an assignment signed by a publisher key refused")
        assert agent.scorer is None
        server.assignments[DEVICE] = assignment(server, make_bundle(1), 1, 3, server_key)  # the right roles
        wait_for(lambda: agent.scorer and agent.scorer.version == 1, what="publisher bundle, server assignment: installed")
    finally:
        _stop(agent, t)


def test_credential_key_roles(tmp_path: Path, keypair: dict[str, Any], server_key: Any) -> None:
    server_pem, pub_pem = _pem(server_key.public_key()), _pem(keypair["public"])
    path = tmp_path / "cred.json"

    def load(**cred: Any) -> AgentConfig:
        path.write_text(json.dumps({"device_id": DEVICE, "server": "http://127.0.0.1:9", **cred}))
        return AgentConfig.from_credential(path, data_dir=tmp_path / "d")

    cfg = load(publisher_keys=[pub_pem], assignment_keys=[server_pem])
    assert [keys.key_id(k) for k in cfg.trusted_keys] == [keys.key_id(keypair["public"])]
    assert [keys.key_id(k) for k in cfg.assignment_keys or []] == [keys.key_id(server_key.public_key())]
    with pytest.raises(DeviceError, match="one role"):
        load(publisher_keys=[pub_pem, server_pem], assignment_keys=[server_pem])
    with pytest.raises(DeviceError, match="no publisher key"):
        load(trusted_keys=[server_pem], assignment_keys=[server_pem])
    with pytest.raises(DeviceError, match="assignment_keys"):
        load(publisher_keys=[pub_pem], assignment_keys=[])
    # A merged list plus the assignment keys apart (older servers): the publisher keys are the rest.
    merged = load(trusted_keys=[server_pem, pub_pem], assignment_keys=[server_pem])
    assert [keys.key_id(k) for k in merged.trusted_keys] == [keys.key_id(keypair["public"])]
    # The legacy credential, one list and no roles: refused, with the operator told to re-enroll.
    for legacy in ({"trusted_keys": [server_pem, pub_pem]}, {"trusted_keys": [pub_pem]}, {"publisher_keys": [pub_pem]}):
        with pytest.raises(DeviceError, match="re-enroll"):
            load(**legacy)


def test_enrolled_credential_keeps_the_server_key_out_of_bundle_trust(tmp_path: Path, make_server: Any, keypair: dict[str, Any],
                                                                       make_bundle: Callable[..., Path]) -> None:
    """The real server's credential: its assignment key signs assignments, never bundles."""
    from compiler.bundle import bundle_files
    from edgefleet.bundle_format import open_bundle, pack
    from runtimes.python.errors import InstallError
    from tests.fleet_server.conftest import Api, enroll

    server = make_server()
    cred = enroll(Api(server), "gw-roles")
    skey = server.fleet.secrets.signing_key
    server_id = keys.key_id(skey.public_key())
    path = tmp_path / "cred.json"
    path.write_text(json.dumps(cred))
    cfg = AgentConfig.from_credential(path, data_dir=tmp_path / "device")
    assert [keys.key_id(k) for k in cfg.assignment_keys or []] == [server_id]
    assert server_id not in {keys.key_id(k) for k in cfg.trusted_keys} and keys.key_id(keypair["public"]) in {keys.key_id(k) for k in cfg.trusted_keys}
    agent = Agent(cfg)
    b = open_bundle(make_bundle(1))
    manifest = json.loads(b.manifest_bytes)
    manifest["key_id"] = server_id
    files = bundle_files(manifest, [], skey)
    files.update({k: v for k, v in b.files.items() if k.startswith("artifacts/")})
    evil = tmp_path / "server-signed.tar"
    evil.write_bytes(pack(files))
    with pytest.raises(InstallError):
        agent.store.install(evil)
    assert agent.store.install(make_bundle(1)).version == 1
    agent.outbox.close()


def test_flipped_artifact_on_a_real_fleet_converges_back(tmp_path: Path, make_server: Any, make_bundle: Callable[..., Path]) -> None:
    """Real server + real Mosquitto rollout v1 -> v2; a bit flips in v2 on the device: the server
    is told the device fell back to v1, and the device is back on v2 without a new rollout."""
    from tests.fleet_server.conftest import Api, enroll, start_agent
    from tests.fleet_server.conftest import wait_for as fwait
    from tests.support.mqtt_broker import Mosquitto

    broker = Mosquitto(tmp_path).start()
    try:
        server = make_server(mqtt_url=broker.url)
        api = Api(server)
        for v in (1, 2):
            assert api("POST", "/api/v1/models", raw=make_bundle(v).read_bytes())[0] == 201
        cred = enroll(api, "gw-flip")
        agent, t = start_agent(tmp_path, cred, status_seconds=0.5)
        fwait(lambda: api("GET", "/api/v1/devices/gw-flip")[1].get("capabilities"), what="capabilities")
        code, r, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "version": 2, "steps": [100]})
        assert code == 201, r
        fwait(lambda: agent.scorer and agent.scorer.version == 2, what="v2 via the rollout")
        fwait(lambda: api("GET", f"/api/v1/rollouts/{r['id']}")[1]["state"] == "completed", what="rollout completed")
        _stop(agent, t)
        models = tmp_path / "devices" / "gw-flip" / "models"
        active = models / "slots" / json.loads((models / "state.json").read_text())["active"] / "artifacts" / "model.onnx"
        data = bytearray(active.read_bytes())
        data[len(data) // 2] ^= 0x10
        active.write_bytes(bytes(data))
        agent, t = start_agent(tmp_path, cred, status_seconds=0.5)
        try:
            fwait(lambda: agent.scorer and agent.scorer.version == 2 and agent.store.fallback is None, what="v2 re-installed")
            fwait(lambda: api("GET", "/api/v1/devices/gw-flip")[1]["active_version"] == 2, what="the server sees v2 again")
        finally:
            _stop(agent, t)
    finally:
        broker.stop()
