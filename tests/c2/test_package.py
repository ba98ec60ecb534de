"""``edgefleet minifi package``: the files, their structure, and the packaged processor running from its own copy of edgefleet."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

from edgefleet_cli.main import main
from tests.c2.test_processor import STANDIN, telco_records

RUN = r"""
import importlib.util, json, sys
standin, proc_file, bundle, key, records = sys.argv[1:6]
sys.path.insert(0, standin)
spec = importlib.util.spec_from_file_location("ScoreChurn", proc_file)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
from nifiapi.flowfiletransform import StandinFlowFile
from nifiapi.properties import ProcessContext
p = mod.ScoreChurn()
ctx = ProcessContext({"Model Bundle Path": bundle, "Trusted Public Keys": key}, p.getPropertyDescriptors())
p.onScheduled(ctx)
r = p.transform(ctx, StandinFlowFile(records.encode()))
import edgefleet, runtimes.nifi.core
print(json.dumps({"rel": r.getRelationship(), "out": json.loads(r.getContents()), "edgefleet": edgefleet.__file__,
                  "core": runtimes.nifi.core.__file__}))
"""


def _run(proc_file: Path, extra_path: Path | None, bundle: Path, key: Path, records: str) -> dict[str, Any]:
    code = RUN if extra_path is None else RUN.replace("sys.path.insert(0, standin)",
                                                      f"sys.path.insert(0, standin); sys.path.insert(0, {str(extra_path)!r})")
    # -I: no user site, no cwd (the repo) on sys.path, so only the packaged copy (or the venv's install) can be imported
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(STANDIN), str(proc_file), str(bundle), str(key), records],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_package_writes_processors_settings_and_a_nar_that_run_from_their_own_copy(tmp_path: Path, make_bundle: Callable[..., Path],
                                                                                    keypair: dict[str, Any], capsys: Any) -> None:
    out = tmp_path / "pkg"
    assert main(["minifi", "package", "--out", str(out), "--server", "http://fleet.example:8080", "--device-id", "mf-7",
                 "--token", "dev_abc"]) == 0
    assert "nifi-edgefleet-nar-1.0.0.nar" in capsys.readouterr().out
    mini = out / "minifi/minifi-python/nifi_python_processors/ScoreChurn.py"
    nifi = out / "nifi/python/extensions/ScoreChurn.py"
    for f in (mini, nifi):
        tree = ast.parse(f.read_text())
        (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ScoreChurn"]
        inner = {n.name for n in cls.body if isinstance(n, ast.ClassDef)}
        methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
        assert "ProcessorDetails" in inner and {"transform", "onScheduled", "getPropertyDescriptors"} <= methods
    assert "Java" in nifi.read_text() and "org.apache.nifi.python.processor.FlowFileTransform" in nifi.read_text()
    assert "onTrigger" in mini.read_text() and "onStopped" not in mini.read_text().split("class ScoreChurn", 1)[1]
    for lib in (out / "minifi/minifi-python/edgefleet_lib", out / "nifi/python/edgefleet_lib"):
        assert (lib / "edgefleet/bundle_format.py").exists() and (lib / "edgefleet/schema/manifest.schema.json").exists()
        assert (lib / "runtimes/nifi/core.py").exists() and (lib / "runtimes/python/scorer.py").exists()
        assert not (lib / "runtimes/js").exists() and not list(lib.rglob("__pycache__"))
    props = (out / "minifi/minifi.properties.c2").read_text()
    assert "nifi.c2.rest.path.base=http://mf-7:dev_abc@fleet.example:8080/c2-protocol" in props
    assert "nifi.c2.rest.url=/heartbeat" in props and "nifi.c2.rest.url.ack=/acknowledge" in props
    boot = (out / "nifi/bootstrap.conf.c2").read_text()
    assert "c2.rest.path.base=http://fleet.example:8080/c2-protocol/agent/dev_abc" in boot and "c2.rest.path.heartbeat=heartbeat" in boot
    reqs = (out / "requirements.txt").read_text().splitlines()
    assert {r.split("==")[0] for r in reqs if not r.startswith("#")} == {"numpy", "onnxruntime", "cryptography"}
    nar = out / "nifi-edgefleet-nar-1.0.0.nar"
    with zipfile.ZipFile(nar) as z:
        names = set(z.namelist())
        assert {"META-INF/MANIFEST.MF", "ScoreChurn.py", "requirements.txt"} <= names
        assert "NAR-INF/bundled-dependencies/edgefleet/bundle_format.py" in names
        assert "NAR-INF/bundled-dependencies/runtimes/nifi/shells/common.py" in names
        assert "Nar-Id: nifi-edgefleet-nar" in z.read("META-INF/MANIFEST.MF").decode()
        z.extractall(tmp_path / "nar")

    bundle, records = make_bundle(1), json.dumps(telco_records(2, seed=5))
    got = _run(nifi, None, bundle, keypair["public_path"], records)
    assert got["rel"] == "success" and len(got["out"]) == 2
    assert got["edgefleet"].startswith(str(out / "nifi/python/edgefleet_lib"))  # the packaged copy, not the repo's
    got = _run(tmp_path / "nar/ScoreChurn.py", tmp_path / "nar/NAR-INF/bundled-dependencies", bundle, keypair["public_path"], records)
    assert got["rel"] == "success" and got["core"].startswith(str(tmp_path / "nar/NAR-INF/bundled-dependencies"))

    # a second run replaces the vendored copy; an unwritable --out is one line
    assert main(["minifi", "package", "--out", str(out)]) == 0
    assert "<device_token>" in (out / "nifi/bootstrap.conf.c2").read_text()
    (tmp_path / "file").write_text("x")
    assert main(["minifi", "package", "--out", str(tmp_path / "file")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgefleet: error: --out: cannot write") and err.count("\n") == 1


def test_package_with_an_enrollment_token_enrolls_the_agent_and_the_settings_work(c2_server: Any, make_bundle: Callable[..., Path],
                                                                                  tmp_path: Path, capsys: Any) -> None:
    from tests.c2.agents import CppAgent
    from tests.fleet_server.conftest import Api, wait_for

    api = Api(c2_server)
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    tok = api("POST", "/api/v1/enrollment-tokens", {"group": "minifi"})[1]["token"]
    out = tmp_path / "pkg"
    assert main(["minifi", "package", "--out", str(out), "--server", c2_server.url, "--device-id", "mf-pkg", "--enroll-token", tok]) == 0
    assert "enrolled mf-pkg" in capsys.readouterr().out
    assert api("GET", "/api/v1/devices/mf-pkg")[1]["capabilities"]["kind"] == "minifi"
    assert list((out / "keys").glob("*.pem"))
    # the written C++ settings authenticate: use them as the re-enacted agent's configuration
    props = dict(line.split("=", 1) for line in (out / "minifi/minifi.properties.c2").read_text().splitlines()
                 if line and not line.startswith("#"))
    agent = CppAgent(props["nifi.c2.rest.path.base"], tmp_path / "assets", props["nifi.c2.agent.identifier"])
    assert api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100], "selector": {"groups": ["minifi"]}})[0] == 201
    wait_for(lambda: api("GET", "/api/v1/devices/mf-pkg")[1].get("assignment"), what="the assignment")
    agent.beat()
    assert agent.acks[-1]["operationState"]["state"] == "FULLY_APPLIED" and (agent.root / "edgefleet/churn/bundle.tar").exists()
    # the token is one-time: a second run names the refusal in one line
    assert main(["minifi", "package", "--out", str(out), "--server", c2_server.url, "--device-id", "mf-pkg2", "--enroll-token", tok]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgefleet: error:") and "already used" in err and err.count("\n") == 1
    assert main(["minifi", "package", "--out", str(out), "--enroll-token", tok]) == 1
    assert "--device-id: required" in capsys.readouterr().err
