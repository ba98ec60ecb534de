"""The closed loop end to end (examples/simulate_loop.py): a real FleetServer, Mosquitto, six
in-process device agents, delayed labels, the monitor thread, ``edgefleet retrain`` started by
the server as a subprocess, and the ML canary gate. About 50 s per scenario.

* drift: the price increase raises a drift alert within two windows of its start, realized
  AUROC of v1 falls, retraining registers v2 (which beat v1 on the newest labeled slice), and
  v2 passes the canary gate and reaches every device, where it scores the drifted customers
  better than v1 did;
* control: the same run without the price increase raises no alert and starts no retrain;
* bad-challenger: the challenger is trained on shuffled labels and forced past the
  champion/challenger check; it passes parity, and the ML gate halts the rollout at the canary
  and rolls it back, so every device still runs v1 (slow; its two halves run by default in
  test_retrain_cli and test_ml_gate).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from simulate_loop import run

WINDOW_LIMIT = 2  # the drift alert fires for a window at most this many windows after the price increase starts


# control and bad-challenger are slow (about 37 s each). What stays in the default run: the fair-model control of the
# fairness monitor (no alert over its windows); for bad-challenger, its retrain half (a shuffled-label challenger loses, --force
# registers it as forced, parity passed, behind the default ML gate: test_retrain_cli) and its gate half (the gate halts such a
# canary and rolls it back on real agents on a real Mosquitto: test_ml_gate), while drift runs this same loop up to the retrain.
@pytest.mark.parametrize("scenario", ["drift", pytest.param("control", marks=pytest.mark.slow),
                                      pytest.param("bad-challenger", marks=pytest.mark.slow)])
def test_closed_loop(scenario: str, tmp_path: Path) -> None:
    lines: list[str] = []
    r = run(scenario, workdir=tmp_path / "loop", log=lines.append)
    print("\n".join(lines))
    versions = set(r["versions"].values())
    if scenario == "control":
        assert r["alerts"] == [] and r["retrain_jobs"] == [] and r["registered"] == [1] and versions == {1}
        assert r["auroc_v1_baseline"] > 0.75
        return
    start = r["drift_started_window"]
    assert r["drift_alert_window"] is not None and start <= r["drift_alert_window"] <= start + WINDOW_LIMIT, r["drift_alert_window"]
    assert r["performance_alert_window"] is not None
    assert r["auroc_v1_drifted"] < r["auroc_v1_baseline"] - 0.08, "realized AUROC drops once labels arrive"
    started = [j for j in r["retrain_jobs"] if j["event"] == "started"]
    assert len(started) == 1 and any(j["event"] == "exited" and j["returncode"] == 0 for j in r["retrain_jobs"]), r["retrain_jobs"]
    prov = r["v2"]
    assert prov["parent"]["version"] == 1 and prov["trigger"]["alert"]["kind"] == "performance"
    assert prov["trigger"]["alert"]["id"] == started[0]["alert"]
    if scenario == "drift":
        assert not prov["metrics"]["forced"] and prov["metrics"]["won_on"], prov["metrics"]
        assert r["rollout"]["state"] == "completed" and r["rollout"]["counts"] == {"installed": 6}
        assert versions == {2}, r["versions"]
        assert [x["state"] for x in prov["rollouts"]] == ["completed"]
        assert r["auroc_v2_drifted"] > r["auroc_v1_drifted"], (r["auroc_v2_drifted"], r["auroc_v1_drifted"])
    else:
        assert prov["metrics"]["forced"] and all(p["passed"] for p in prov["parity"]), "the bad challenger passes parity"
        ro = r["rollout"]
        assert ro["state"] == "halted" and ro["step_index"] == 0 and ro["counts"].get("rolled_back") == 1
        assert ro["reason"].startswith("ml gate: canary v2") and "estimated AUROC" in ro["reason"]
        assert versions == {1}, r["versions"]
