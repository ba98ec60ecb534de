"""Fuzz: schemathesis over the shipped OpenAPI document against a real waitress server.

The document itself must be valid OpenAPI 3.1 (checked against the 3.1 meta-schema that
schemathesis ships, and every schema in it against JSON Schema 2020-12). Then ``st run`` (the
installed CLI, in a subprocess) generates valid and invalid requests from it, with the admin
token and with a device token, and fails on any 5xx, on a response that breaks its declared
schema, status code or content type, and on an invalid request the server accepted.

The default run fuzzes the device-token operations and a few admin ones, each against its own
server, both ``st run`` processes at once (each is bounded by its ``--max-time``, and neither keeps a
core busy alone: together they take the time of the longer one, about 45 s, instead of the sum); the
full run over every operation with the admin token is marked ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

from compiler.bundle import bundle_files
from edgefleet.bundle_format import canonical_json, pack
from fleet_server.core import ServerConfig
from fleet_server.openapi import SPEC
from fleet_server.serve import FleetServer
from tests.fleet_server.conftest import Api, enroll

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection"
ST = Path(sys.executable).with_name("st")


def test_openapi_document_is_valid_openapi_3_1() -> None:
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    jsonschema.Draft202012Validator(OPENAPI_31).validate(SPEC)
    schemas = [SPEC["components"]["schemas"]]
    for ops in SPEC["paths"].values():
        for op in ops.values():
            schemas += [p["schema"] for p in op.get("parameters", [])]
            schemas += [c["schema"] for c in op.get("requestBody", {}).get("content", {}).values()]
            schemas += [c["schema"] for r in op["responses"].values() for c in r.get("content", {}).values()]
    for schema in schemas:
        jsonschema.Draft202012Validator.check_schema(schema)
    templated = {p for p in SPEC["paths"] if "{" in p}
    for path in templated:
        for op in SPEC["paths"][path].values():
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == set(re.findall(r"{([a-z_0-9]+)}", path)), path
    bodies = [c["schema"] for ops in SPEC["paths"].values() for op in ops.values() for c in op.get("requestBody", {}).get("content", {}).values()]
    # 12 + the 4 C2 bodies (heartbeat and acknowledge, header and path-token routes: fleet_server/c2) + POST /api/v1/api-keys
    # + the 2 Open Inference Protocol infer routes (fleet_server/api/v2.py)
    assert len(bodies) == 19 and all(b.get("type") for b in bodies), "every request body is typed (no `schema: {}`)"


@pytest.fixture()
def target(make_server: Any, make_bundle: Callable[..., Path], tmp_path: Path) -> dict[str, Any]:
    return _start(make_server(), make_bundle, tmp_path)


@pytest.fixture()
def target_pg(make_server: Any, make_bundle: Callable[..., Path], tmp_path: Path, fresh_pg: str) -> dict[str, Any]:
    return _start(make_server(db_url=fresh_pg), make_bundle, tmp_path)


def _start(server: Any, make_bundle: Callable[..., Path], tmp_path: Path) -> dict[str, Any]:
    return _start_with(server, make_bundle(1).read_bytes(), tmp_path)


def _start_with(server: Any, archive: bytes, tmp_path: Path) -> dict[str, Any]:
    api = Api(server)
    assert api("POST", "/api/v1/models", raw=archive)[0] == 201
    dev = enroll(api, "fuzz-dev")
    status = {"capabilities": {"backends": ["onnx"], "formats": ["onnx"]}, "health": "no-model"}
    assert api("POST", "/api/v1/devices/fuzz-dev/status", status, token=dev["token"])[0] == 204
    code, _, _ = api("POST", "/api/v1/rollouts", {"model": "churn", "steps": [100]})
    assert code == 201
    spec = tmp_path / "openapi.json"
    code, doc, _ = api("GET", "/api/v1/openapi.json", token=None)
    spec.write_text(json.dumps(doc))
    return {"server": server, "api": api, "device_token": dev["token"], "spec": spec, "tmp": tmp_path}


def run_schemathesis(t: dict[str, Any], token: str, *, name: str, include: list[str], max_examples: int, max_time: int,
                     phases: str = "examples,coverage,fuzzing") -> dict[str, Any]:
    """One bounded ``st run``; returns its figures, and the failures as text."""
    return finish_schemathesis(start_schemathesis(t, token, name=name, include=include, max_examples=max_examples, max_time=max_time,
                                                  phases=phases))


def start_schemathesis(t: dict[str, Any], token: str, *, name: str, include: list[str], max_examples: int, max_time: int,
                       phases: str = "examples,coverage,fuzzing") -> dict[str, Any]:
    """Starts one bounded ``st run`` in the background; :func:`finish_schemathesis` waits for it."""
    cfg = t["tmp"] / f"{name}.toml"
    # the device's own id, the registered model: so requests reach past auth and lookups
    cfg.write_text('[parameters]\n"path.device_id" = "fuzz-dev"\n"path.name" = "churn"\n\n'
                   # a body over the JSON limit is refused with 413, which schemathesis does not count as a rejection
                   '[checks.negative_data_rejection]\nexpected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]\n')
    report = t["tmp"] / f"{name}-report"
    cmd = [str(ST), "--config-file", str(cfg), "run", str(t["spec"]), "--url", t["server"].url,
           "-H", f"Authorization: Bearer {token}", "--checks", CHECKS, "--phases", phases,
           "--max-examples", str(max_examples), "--max-time", str(max_time), "--workers", "1", "--seed", "10",
           "--generation-database", "none", "--no-shrink", "--suppress-health-check", "all", "--request-timeout", "30",
           "--report", "har", "--report-dir", str(report), "--no-color", *include]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fleet_server.st_hooks",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    out, err = t["tmp"] / f"{name}.stdout", t["tmp"] / f"{name}.stderr"
    with out.open("w") as fo, err.open("w") as fe:  # files, not pipes: nobody reads them while it runs
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True, env=env, cwd=root)
    return {"proc": proc, "timeout": max_time + 240, "report": report, "stdout": out, "stderr": err, "out": t["tmp"] / f"{name}.out"}


def finish_schemathesis(run: dict[str, Any]) -> dict[str, Any]:
    """Waits for a started ``st run``; returns its figures, and the failures as text."""
    proc = run["proc"]
    try:
        proc.wait(timeout=run["timeout"])
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    stdout, stderr = run["stdout"].read_text(), run["stderr"].read_text()
    figures = _figures(run["report"])
    figures["exit"] = proc.returncode
    run["out"].write_text(stdout + stderr)
    failures = stdout.find("=== FAILURES ===")
    figures["output"] = (stdout[failures:failures + 12000] if failures >= 0 else "") + stdout[-3000:] + stderr[-2000:]
    return figures


def _figures(report: Path) -> dict[str, Any]:
    """Operations, requests and status codes from the run's HAR file (every request it sent)."""
    ops: set[str] = set()
    statuses: dict[str, int] = {}
    for f in report.glob("har-*.json"):
        for entry in json.loads(f.read_text()).get("log", {}).get("entries", []):
            req, code = entry.get("request", {}), entry.get("response", {}).get("status", 0)
            ops.add(req.get("method", "") + " " + re.sub(r"\?.*", "", req.get("url", "")))
            statuses[str(code)] = statuses.get(str(code), 0) + 1
    return {"requests": sum(statuses.values()), "server_errors": sum(n for c, n in statuses.items() if c.startswith("5")),
            "statuses": dict(sorted(statuses.items())), "distinct_urls": len(ops)}


def _assert_clean(fig: dict[str, Any]) -> None:
    print({k: v for k, v in fig.items() if k != "output"})
    assert fig["requests"] > 0, fig["output"]
    assert fig["server_errors"] == 0, fig["output"]
    assert fig["exit"] == 0, fig["output"]


DEVICE_OPS = ["--include-path-regex", r"^/api/v1/(devices/\{device_id\}/|artifacts/)"]
ADMIN_SUBSET = ["--include-path-regex", r"^/api/v1/(enrollment-tokens|devices/enroll|rollouts$|models/\{name\}/(predict|drift)|alerts)"]


@pytest.fixture(scope="module")
def default_runs(lr_result: Any, keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The two default ``st run``s, started together, each against its own fresh server (as a ``target`` is);
    each test waits for its own."""
    manifest = json.loads(canonical_json(lr_result.manifest))  # what make_bundle(1) packs: the compiled model, signed as v1
    files = bundle_files(manifest, [], keypair["private"])
    files.update({k: v for k, v in lr_result.files.items() if k.startswith("artifacts/")})
    archive = pack(files)
    servers: list[FleetServer] = []
    runs: dict[str, dict[str, Any]] = {}
    try:
        for name, include, token, max_examples, max_time in (("device", DEVICE_OPS, "device", 60, 45),
                                                             ("admin-subset", ADMIN_SUBSET, "admin", 40, 40)):
            tmp = tmp_path_factory.mktemp(f"fuzz-{name}")
            cfg = ServerConfig(data_dir=tmp / "fleet", trust_keys=[keypair["public_path"]], embedded_broker=False, port=0,
                               reconcile_seconds=0.2)
            servers.append(FleetServer(cfg).start())
            t = _start_with(servers[-1], archive, tmp)
            runs[name] = start_schemathesis(t, t["device_token"] if token == "device" else t["api"].token, name=name, include=include,
                                            max_examples=max_examples, max_time=max_time)
        yield runs
    finally:
        for r in runs.values():
            if r["proc"].poll() is None:
                r["proc"].kill()
                r["proc"].wait()
        for s in servers:
            s.stop()


def test_fuzz_device_token_operations(default_runs: dict[str, dict[str, Any]]) -> None:
    _assert_clean(finish_schemathesis(default_runs["device"]))


def test_fuzz_admin_subset(default_runs: dict[str, dict[str, Any]]) -> None:
    _assert_clean(finish_schemathesis(default_runs["admin-subset"]))


@pytest.mark.slow
def test_fuzz_every_operation_with_admin_and_device_tokens(target: dict[str, Any]) -> None:
    admin = run_schemathesis(target, target["api"].token, name="admin-full", include=[], max_examples=300, max_time=300)
    _assert_clean(admin)
    device = run_schemathesis(target, target["device_token"], name="device-full", include=[], max_examples=200, max_time=120)
    _assert_clean(device)


@pytest.mark.slow
def test_fuzz_every_operation_on_postgresql(target_pg: dict[str, Any]) -> None:
    """PostgreSQL refuses what SQLite stores (NUL, lone surrogates, 64-bit ints in INTEGER columns)."""
    admin = run_schemathesis(target_pg, target_pg["api"].token, name="pg-admin", include=[], max_examples=150, max_time=150)
    _assert_clean(admin)
    device = run_schemathesis(target_pg, target_pg["device_token"], name="pg-device", include=DEVICE_OPS, max_examples=100, max_time=60)
    _assert_clean(device)
