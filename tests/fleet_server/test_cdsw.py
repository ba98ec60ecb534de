"""The CDSW-shaped scoring route against a real server, with the fraud example's random forest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from examples.fraud.data import FEATURES, LABEL, make_day
from tests.fleet_server.conftest import Api
from tests.fleet_server.test_fuzz import target  # noqa: F401 - the fuzz target fixture (server, churn model, spec)

# the first row of Kaggle's creditcard.csv without Time, as the companion README gives it
KAGGLE_ROW = ("-1.3598071336738,-0.0727811733098497,2.53634673796914,1.37815522427443,-0.338320769942518,0.462387777762292,"
              "0.239598554061257,0.0986979012610507,0.363786969611213,0.0907941719789316,-0.551599533260813,-0.617800855762348,"
              "-0.991389847235408,-0.311169353699879,1.46817697209427,-0.470400525259478,0.207971241929242,0.0257905801985591,"
              "0.403992960255733,0.251412098239705,-0.018306777944153,0.277837575558899,-0.110473910188767,0.0669280749145731,"
              "0.128539358273528,-0.189114843888824,0.133558376740387,-0.0210530534538215,149.62")


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory, keypair: dict[str, Any]) -> dict[str, Any]:
    from compiler import compile as compile_model
    from examples.fraud.model import make_pipeline

    day = make_day(1, 6000, seed=3)
    pipe = make_pipeline().fit(day[FEATURES], day[LABEL])
    out = tmp_path_factory.mktemp("fraud") / "fraud-v1"
    result = compile_model(pipe, day.iloc[:2000], targets=["onnx"], name="fraud", version=1, private_key=keypair["private"],
                           label=LABEL, out_dir=out)
    assert result.archive is not None
    return {"pipe": pipe, "day": day, "archive": Path(result.archive)}


@pytest.fixture()
def api(make_server: Any, fraud: dict[str, Any]) -> Api:
    a = Api(make_server())
    code, body, _ = a("POST", "/api/v1/models", raw=fraud["archive"].read_bytes())
    assert code == 201, body
    return a


def _feature(row: Any) -> str:
    return ",".join(repr(float(row[c])) for c in FEATURES)


def test_cdsw_bare_and_enveloped_requests_score_like_the_model(api: Api, fraud: dict[str, Any]) -> None:
    day = fraud["day"]
    rows = [day[day[LABEL] == 1].iloc[0], day[day[LABEL] == 0].iloc[0]]
    want = fraud["pipe"].predict_proba(day.loc[[r.name for r in rows], FEATURES])[:, 1]
    for row, p in zip(rows, want):
        code, body, _ = api("POST", "/api/v1/models/fraud/cdsw", {"feature": _feature(row)})
        assert code == 200, body
        assert body["result"] == (1 if p > 0.5 else 0) and body["model_version"] == 1
        assert body["probability"] == pytest.approx(p, abs=1e-5)
        code, wrapped, _ = api("POST", "/api/v1/models/fraud/cdsw", {"accessKey": "mukd9sit7tacnfq2phhn3whc4unq1f38",
                                                                     "request": {"feature": _feature(row)}})
        assert code == 200 and wrapped == {"success": True, "response": body}
    assert rows[0][LABEL] == 1 and want[0] > 0.5  # the fraud row is caught: the test would fail if results were constant
    code, body, _ = api("POST", "/api/v1/models/fraud/cdsw?version=1", {"feature": KAGGLE_ROW})
    assert code == 200 and body["result"] in (0, 1) and 0.0 <= body["probability"] <= 1.0
    spaced = KAGGLE_ROW.replace(",", ", ")
    assert api("POST", "/api/v1/models/fraud/cdsw", {"feature": spaced})[1] == body


@pytest.mark.parametrize("payload, status, error", [
    ({"feature": ",".join(["0.5"] * 28)}, 400, "feature: 28 values; the model takes 29 (V1, V2, V3, ..., Amount)"),
    ({"feature": ",".join(["0.5"] * 30)}, 400, "feature: 30 values; the model takes 29"),
    ({"feature": "0.1,0.2,abc," + ",".join(["0.5"] * 26)}, 400, "feature: value 3 (V3) is 'abc', not a finite number"),
    ({"feature": ",".join(["0.5"] * 28) + ",nan"}, 400, "feature: value 29 (Amount) is 'nan', not a finite number"),
    ({"feature": ""}, 400, "feature: empty; expected 29 comma-separated values"),
    ({}, 400, "feature: required"),
    ({"accessKey": "k", "request": {}}, 400, "request.feature: required"),
    ({"accessKey": "k", "request": {"feature": "1,2"}}, 400, "request.feature: 2 values; the model takes 29"),
    ({"feature": [0.5] * 29}, 400, "feature: expected a string, got a list"),
    ({"feature": KAGGLE_ROW, "request": {"feature": KAGGLE_ROW}}, 400, "feature: give either"),
    ([{"feature": KAGGLE_ROW}], 400, "body: expected an object"),
])
def test_cdsw_bad_input_is_a_400_naming_the_field(api: Api, payload: Any, status: int, error: str) -> None:
    code, body, _ = api("POST", "/api/v1/models/fraud/cdsw", payload)
    assert code == status and body["error"].startswith(error), body


def test_cdsw_needs_the_admin_token_and_a_known_model(api: Api) -> None:
    assert api("POST", "/api/v1/models/fraud/cdsw", {"feature": KAGGLE_ROW}, token=None)[0] == 401
    assert api("POST", "/api/v1/models/fraud/cdsw", {"feature": KAGGLE_ROW}, token="wrong")[0] == 403
    code, body, _ = api("POST", "/api/v1/models/nope/cdsw", {"feature": KAGGLE_ROW})
    assert code == 404 and body["error"].startswith("model")
    code, body, _ = api("POST", "/api/v1/models/fraud/cdsw", raw=b"{not json")
    assert code == 400 and "error" in body


@pytest.mark.slow  # full route fuzz in make test-all; the default run checks each CDSW 400 above
def test_fuzz_cdsw_route_never_answers_5xx(target: dict[str, Any]) -> None:
    """schemathesis over this one operation (the shipped spec, a real server, the churn model's mixed fields)."""
    from tests.fleet_server.test_fuzz import _assert_clean, run_schemathesis

    fig = run_schemathesis(target, target["api"].token, name="cdsw", include=["--include-path-regex", r"^/api/v1/models/\{name\}/cdsw$"],
                           max_examples=40, max_time=25)
    _assert_clean(fig)
