"""ScoreChurn driven through the test stand-in for ``nifiapi`` (tests/c2/standin/README.md): both shells,
1,000 Telco-like records scored exactly as ``Scorer.score_many``, invalid records routed to failure,
an unverifiable bundle refused while the last good one keeps scoring, and telemetry from a flow
reaching a real fleet server."""

from __future__ import annotations

import importlib
import io
import json
import math
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import func, select

from edgefleet import keys
from edgefleet_cli.samples.telco_churn import CATEGORICAL, NUMERIC, make_telco_churn
from fleet_server.db import TelemetryRecord
from runtimes.nifi.core import ScoreChurnCore, ScoreChurnSettings
from runtimes.python.scorer import Scorer
from tests.c2.agents import CppAgent
from tests.c2.conftest import enroll_agent
from tests.fleet_server.conftest import Api, wait_for

STANDIN = Path(__file__).parent / "standin"


@pytest.fixture(scope="module")
def shells() -> Any:
    sys.path.insert(0, str(STANDIN))
    try:
        from nifiapi.flowfiletransform import StandinFlowFile, StandinSession
        from nifiapi.properties import ProcessContext

        nifi = importlib.import_module("runtimes.nifi.shells.nifi_score_churn")
        minifi = importlib.import_module("runtimes.nifi.shells.minifi_score_churn")
        yield {"nifi": nifi.ScoreChurn, "minifi": minifi.ScoreChurn, "FlowFile": StandinFlowFile, "Session": StandinSession,
               "Context": ProcessContext}
    finally:
        sys.path.remove(str(STANDIN))
        for name in [m for m in sys.modules if m == "nifiapi" or m.startswith("nifiapi.") or m.startswith("runtimes.nifi.shells.")]:
            del sys.modules[name]


def telco_records(n: int, seed: int) -> list[dict[str, Any]]:
    df = make_telco_churn(n, seed=seed)
    rows = df[["customerID", *CATEGORICAL, *NUMERIC]].to_dict(orient="records")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]


def _model_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "customerID"} for r in records]


def test_both_shells_score_1000_records_as_score_many_and_route_invalid_ones(shells: Any, make_bundle: Callable[..., Path],
                                                                               keypair: dict[str, Any]) -> None:
    bundle = make_bundle(1)
    records = telco_records(1000, seed=7)
    want = Scorer.from_bundle(bundle, keypair["public_path"]).score_many(_model_rows(records))
    props = {"Model Bundle Path": str(bundle), "Trusted Public Keys": str(keypair["public_path"]), "Output Mode": "json"}

    proc = shells["nifi"]()
    ctx = shells["Context"](props, proc.getPropertyDescriptors())
    proc.onScheduled(ctx)
    result = proc.transform(ctx, shells["FlowFile"](json.dumps(records).encode()))
    assert result.getRelationship() == "success", result.getAttributes()
    out = json.loads(result.getContents())
    assert [r["churn_probability"] for r in out] == [p.probability for p in want]  # identical, not close
    assert [r["churn_label"] for r in out] == [p.label for p in want] and out[0]["customerID"] == records[0]["customerID"]
    assert result.getAttributes()["score.count"] == "1000" and result.getAttributes()["score.model.version"] == "1"

    # three bad records among good ones; MiNiFi's shell splits the flowfile
    bad = [dict(records[0], tenure="forty"), {k: v for k, v in records[1].items() if k != "Contract"}, dict(records[2], MonthlyCharges=[70.5])]
    mixed = [*records[3:13], *bad]
    mproc = shells["minifi"]()
    mctx = shells["Context"]({**props, "Output Mode": "attributes"}, mproc.getPropertyDescriptors())
    mproc.onScheduled(mctx)
    session = shells["Session"]([shells["FlowFile"]("\n".join(json.dumps(r) for r in mixed).encode(), {"filename": "batch.jsonl"})])
    mproc.onTrigger(mctx, session)
    routed = {rel: ff for ff, rel in session.transferred}
    assert sorted(routed) == ["failure", "original", "success"]
    ok, failed = routed["success"], routed["failure"]
    assert json.loads(ok.attributes["score.probabilities"]) == [p.probability for p in want[3:13]]
    reasons = json.loads(failed.attributes["score.failure.reasons"])
    assert len(reasons) == 3 and reasons[0].startswith("record 10: tenure:") and reasons[1].startswith("record 11: Contract:")
    assert "missing" in reasons[1] and reasons[2].startswith("record 12: MonthlyCharges:")
    assert [r["customerID"] for r in json.loads(failed.content)] == [r["customerID"] for r in bad]
    assert failed.attributes["filename"] == "batch.jsonl"

    # NiFi's FlowFileTransform sends a flowfile to one relationship: any invalid record -> failure, reasons named
    result = proc.transform(ctx, shells["FlowFile"](json.dumps(mixed).encode()))
    assert result.getRelationship() == "failure" and "record 10: tenure:" in result.getAttributes()["score.failure.reason"]
    # the threshold override changes labels only
    tproc = shells["nifi"]()
    tctx = shells["Context"]({**props, "Probability Threshold": "0.0"}, tproc.getPropertyDescriptors())
    tproc.onScheduled(tctx)
    out = json.loads(tproc.transform(tctx, shells["FlowFile"](json.dumps(records[:5]).encode())).getContents())
    assert [r["churn_label"] for r in out] == [1] * 5 and [r["churn_probability"] for r in out] == [p.probability for p in want[:5]]
    with pytest.raises(Exception, match="Probability Threshold"):
        bproc = shells["nifi"]()
        bproc.onScheduled(shells["Context"]({**props, "Probability Threshold": "high"}, bproc.getPropertyDescriptors()))


def _tamper(src: Path, dest: Path) -> None:
    """The same bundle with one byte of its model artifact changed (the signature still says the old sha256)."""
    with tarfile.open(src) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else b"") for m in tf.getmembers()]  # type: ignore[union-attr]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for m, data in members:
            if m.name.startswith("artifacts/"):
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            out.addfile(m, io.BytesIO(data))
    dest.write_bytes(buf.getvalue())


def test_an_unverifiable_bundle_is_refused_and_the_last_good_one_keeps_scoring(make_bundle: Callable[..., Path], keypair: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    live = tmp_path / "assets/edgefleet/churn/bundle.tar"
    live.parent.mkdir(parents=True)
    live.write_bytes(make_bundle(1).read_bytes())
    core = ScoreChurnCore(ScoreChurnSettings(model_path=str(live), trusted_keys=str(keypair["public_path"])))
    assert core.refresh() is None and core.scorer is not None and core.scorer.version == 1
    rec = telco_records(3, seed=3)
    before = core.score_content(json.dumps(rec).encode())
    _tamper(make_bundle(2), live)
    after = core.score_content(json.dumps(rec).encode())
    assert [p for _, _, p in after.scored] == [p for _, _, p in before.scored] and after.scored[0][2].version == 1
    assert core.last_refusal and "refused bundle" in core.last_refusal and "still scoring with churn v1" in core.last_refusal
    # a validly signed bundle from a key that is not trusted is refused the same way
    other = tmp_path / "other"
    keys.generate_keypair(other)
    from compiler.bundle import bundle_files
    from edgefleet.bundle_format import canonical_json, open_bundle, pack

    b2 = open_bundle(make_bundle(2))
    manifest = json.loads(canonical_json(b2.manifest))
    files = bundle_files(manifest, [], keys.load_private_key(other / "private.pem"))
    files.update({k: v for k, v in b2.files.items() if k.startswith("artifacts/")})
    live.write_bytes(pack(files))
    assert core.score_content(json.dumps(rec).encode()).scored[0][2].version == 1 and "refused" in (core.last_refusal or "")
    live.unlink()  # the C++ agent deletes an old asset before renaming the new one in: keep scoring
    assert core.score_content(json.dumps(rec).encode()).scored[0][2].version == 1
    live.write_bytes(make_bundle(2).read_bytes())
    assert core.score_content(json.dumps(rec).encode()).scored[0][2].version == 2 and core.last_refusal is None


def test_synced_assets_feed_the_processor_and_its_telemetry_reaches_the_server(c2_server: Any, make_bundle: Callable[..., Path],
                                                                               tmp_path: Path) -> None:
    from runtimes.nifi.telemetry import FlowTelemetry, FlowTelemetryConfig

    api = Api(c2_server)
    assert api("POST", "/api/v1/models", raw=make_bundle(1).read_bytes())[0] == 201
    cred = enroll_agent(api, "mf-tel")
    host = c2_server.url.split("://", 1)[1]
    agent = CppAgent(f"http://mf-tel:{cred['token']}@{host}/c2-protocol", tmp_path / "assets", "mf-tel")
    assert api("POST", "/api/v1/rollouts", {"model": "churn", "version": 1, "steps": [100]})[0] == 201
    wait_for(lambda: (api("GET", "/api/v1/devices/mf-tel")[1].get("assignment") or {}).get("version") == 1, what="assignment")
    agent.beat()
    tel = FlowTelemetry(FlowTelemetryConfig(server=c2_server.url, device_id="mf-tel", token=cred["token"],
                                            outbox_path=tmp_path / "outbox.sqlite", sample_rate=1.0, flush_seconds=0.0))
    core = ScoreChurnCore(ScoreChurnSettings(model_path=str(agent.root / "edgefleet/churn/bundle.tar"),
                                             trusted_keys=str(agent.root / "edgefleet/keys"), entity_field="customerID"), telemetry=tel)
    out = core.score_content(json.dumps(telco_records(50, seed=11)).encode())
    assert len(out.scored) == 50 and out.scored[0][2].version == 1
    assert tel.flush() == 51  # 50 sampled predictions and one sketch, acknowledged by the server
    with c2_server.fleet.session() as s:
        n = s.scalar(select(func.count()).select_from(TelemetryRecord).where(TelemetryRecord.device_id == "mf-tel"))
    assert n == 51 and tel.outbox.depth() == 0
    tel.close()
