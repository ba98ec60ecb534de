"""``edgefleet retrain``: champion/challenger retraining against a running fleet server.

    edgefleet retrain --server URL --model churn --trainer pkg.mod:train --reference-data train.csv \\
        --key keys/private.pem [--window-days 30 | --window-seconds S] [--margin 0.01] \\
        [--targets onnx,pmml] [--alert ID] [--approve-required] [--force]

Workflow (each step is one progress line):

1. **champion**: the version most devices run (``GET /api/v1/devices``; the newest registered
   when none runs one), its manifest and bundle, verified with the public half of ``--key``
   (or ``--pubkey``) before it scores anything;
2. **data**: ``GET /api/v1/models/<name>/labeled`` for ``[now - window, now)``. The newest
   ``--holdout-fraction`` of labeled rows (by prediction time, at least ``--min-holdout``) is
   held out; the rest, appended to ``--reference-data``, is ``train_df``;
3. **train**: ``challenger = trainer(train_df)``; ``--trainer`` is ``module:function`` or
   ``path/to/file.py:function``, called with a DataFrame of the input fields and the label
   column, returning a fitted estimator with ``predict_proba``;
4. **champion vs challenger** on the held-out slice: the champion is scored by the device
   runtime (the bundle itself), the challenger by the estimator. The challenger must beat the
   champion on AUROC *or* average precision by ``--margin``; otherwise nothing is compiled and
   the command exits 4 with the numbers. ``--force`` skips this check (demos of the canary gate).
   When the model's monitoring policy names ``fairness_fields``, both models' fairness on the
   same slice (``edgefleet.fairness``: per-group rates, disparities against the reference group
   with bootstrap intervals) goes into provenance; with ``fairness_gate`` on, a challenger whose
   disparity is beyond the policy's tolerance (the whole interval) and worse than the
   champion's is refused (exit 4, decision ``challenger_refused``, the reason in provenance and
   on stdout); ``--force`` does not skip this;
5. **compile** to every format the champion has, at the champion's canary tolerance (the same
   parity gates), version = newest registered + 1, the held-out slice as the compile sample
   (so the new reference statistics describe the current population);
6. **upload** with ``X-Edgefleet-Provenance``: trigger alert, data window, parent version, both
   models' metrics, trainer, row counts, and the rollout it asks for;
7. **rollout** 10 -> 50 -> 100 % with the ML canary gate on, unless ``--approve-required``:
   then the version waits for ``POST /api/v1/models/<name>/versions/<v>/approve``.

Exit status: 0 registered (rolled out or awaiting approval), 4 the challenger lost, 1 an error
(``edgefleet: error: ...``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from compiler.errors import CompileError
from edgefleet.http import HttpClient

EXIT_CHALLENGER_LOST = 4
DEFAULT_STEPS = [10.0, 50.0, 100.0]
# ML gate limits for a retrained challenger. A challenger that fixes drift is *meant* to score
# the fleet differently: on the price-increase simulation a good v2 moved the score PSI by 0.15
# against v1 and its CBPE-estimated AUROC sat 0.05 below v1's (v1 is overconfident after concept
# drift, which CBPE cannot see). A broken one (shuffled labels) moved PSI by ~5 and estimated
# AUROC to ~0.53. These defaults sit between the two; --gate takes other overrides.
DEFAULT_GATE = {"psi_threshold": 0.3, "max_auroc_drop": 0.1}


class RetrainError(CompileError):
    """The retrain command cannot proceed: server, data, trainer or champion problem."""


@dataclass
class Outcome:
    decision: str                      # "rolled_out" | "awaiting_approval" | "challenger_lost" | "challenger_refused"
    reason: str
    version: int | None = None
    rollout_id: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CHALLENGER_LOST if self.decision in ("challenger_lost", "challenger_refused") else 0


def Client(server: str, token: str) -> HttpClient:  # noqa: N802 - reads like the class it returns
    return HttpClient(server, token, error=RetrainError)


def load_trainer(spec: str) -> Callable[[Any], Any]:
    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise RetrainError(f"--trainer {spec!r}: expected module:function or path/to/file.py:function")
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            path = Path(mod_name)
            if not path.is_file():
                raise RetrainError(f"--trainer {spec!r}: {path} does not exist")
            loader_spec = importlib.util.spec_from_file_location(f"edgefleet_trainer_{path.stem}", path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.path.insert(0, str(path.resolve().parent))
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except RetrainError:
        raise
    except Exception as exc:  # importing user code can raise anything
        raise RetrainError(f"--trainer {spec!r}: cannot import {mod_name}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise RetrainError(f"--trainer {spec!r}: {mod_name} has no function {fn_name!r}")
    return fn  # type: ignore[no-any-return]


def _say(msg: str) -> None:
    print(f"[retrain] {msg}", file=sys.stderr, flush=True)


def _metrics(y: Any, scores: Any) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {"auroc": float(roc_auc_score(y, scores)), "average_precision": float(average_precision_score(y, scores))}


def _clean(obj: Any) -> Any:
    """JSON-safe (strict JSON has no NaN): non-finite floats become None."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _frame(rows: list[dict[str, Any]], fields: list[dict[str, Any]], label: str) -> Any:
    import pandas as pd

    names = [f["name"] for f in fields]
    df = pd.DataFrame(rows)
    for f in fields:
        if f["name"] not in df.columns:
            raise RetrainError(f"labeled telemetry has no field {f['name']!r}; were features sent (include_features)?")
        if f["type"] == "categorical":
            df[f["name"]] = df[f["name"]].astype(object).where(df[f["name"]].notna(), None)
        else:
            df[f["name"]] = pd.to_numeric(df[f["name"]], errors="coerce")
    out = df[names].copy()
    out[label] = df["label"].to_numpy()
    return out


def _fairness(policy: dict[str, Any], hold: Any, y: Any, champ_scores: Any, chal_scores: Any, threshold: float) -> dict[str, Any]:
    """Both models' group metrics and disparities on the held-out slice, and the fairness gate's refusals."""
    from edgefleet import fairness as F

    fields = list(policy.get("fairness_fields") or [])
    if not fields:
        return {"fields": [], "note": "the monitoring policy names no fairness_fields"}
    th = float(policy["fairness_threshold"]) if policy.get("fairness_threshold") is not None else threshold
    fp = F.FairnessPolicy(tolerance=policy["fairness_tolerance"], min_ratio=policy["fairness_min_ratio"],
                          min_count=policy["fairness_min_count"], confidence=policy["fairness_confidence"])
    out: dict[str, Any] = {"fields": fields, "threshold": th, "tolerance": fp.tolerance, "min_ratio": fp.min_ratio,
                           "min_count": fp.min_count, "gate": bool(policy.get("fairness_gate")), "by_field": {}, "refusals": []}
    for f in fields:
        if f not in hold.columns:
            out["by_field"][f] = {"note": f"{f!r} is not an input field of the model; it cannot be read from the held-out rows"}
            continue
        values = [None if v is None or (isinstance(v, float) and v != v) else (int(v) if isinstance(v, float) and v.is_integer() else v)
                  for v in hold[f].tolist()]
        ref = (policy.get("fairness_reference") or {}).get(f)
        per: dict[str, Any] = {}
        for who, scores in (("champion", champ_scores), ("challenger", chal_scores)):
            groups = F.by_group(values, scores, scores > th, y)
            per[who] = {"groups": groups, **F.evaluate(groups, ref, fp, seed_parts=("retrain", f))}
        out["by_field"][f] = per
        for g, comp in per["challenger"]["comparisons"].items():
            for metric in policy.get("fairness_alert_metrics") or F.METRICS:
                new, old = comp[metric], per["champion"]["comparisons"].get(g, {}).get(metric, {})
                worse = (new["value"] < old.get("value", 1.0) if metric == "demographic_parity_ratio"
                         else new["value"] > old.get("value", 0.0))
                if new["verdict"] == "disparity" and worse:
                    out["refusals"].append(
                        f"{metric} for {f}={g} (reference {per['challenger']['reference']}): challenger {new['value']:.3f} "
                        f"[{new['ci'][0]:.3f}, {new['ci'][1]:.3f}] beyond the policy's {new['limit']} "
                        f"(champion {old.get('value', float('nan')):.3f}; groups of {_group_sizes(per, g)} held-out rows)")
    return out


def _group_sizes(per: dict[str, Any], group: str) -> str:
    ch = per["challenger"]
    return f"{ch['groups'][group]['n']} and {ch['groups'][ch['reference']]['n']}"


def _champion(client: HttpClient, model: str) -> tuple[int, int]:
    """(champion version = most common active version on devices, newest registered version)."""
    info = client.request("GET", f"/api/v1/models/{model}")
    newest = int(info["version"])
    devices = client.request("GET", "/api/v1/devices").get("devices", [])
    running = Counter(int(d["active_version"]) for d in devices if d.get("active_model") == model and d.get("active_version"))
    return (running.most_common(1)[0][0] if running else newest), newest


def run(args: argparse.Namespace) -> Outcome:
    import numpy as np
    import pandas as pd

    from compiler import compile as compile_model
    from compiler.progress import Progress
    from edgefleet import keys
    from runtimes.python import Scorer

    token = os.environ.get("EDGEFLEET_ADMIN_TOKEN") or (Path(args.token_file).read_text().strip() if Path(args.token_file).is_file() else None)
    if not token:
        raise RetrainError(f"no admin token: set EDGEFLEET_ADMIN_TOKEN or --token-file ({args.token_file} is not readable)")
    client = Client(args.server, token)
    key = keys.load_private_key(args.key)
    trusted = [key.public_key()] + [keys.load_public_key(p) for p in (args.pubkey or [])]
    trainer = load_trainer(args.trainer)
    t_start = time.time()

    champ_v, newest = _champion(client, args.model)
    champ = client.request("GET", f"/api/v1/models/{args.model}/versions/{champ_v}")
    manifest = champ["manifest"]
    fields = manifest["input_schema"]["fields"]
    label = args.label or (manifest.get("source") or {}).get("label")
    if not label:
        raise RetrainError(f"{args.model} v{champ_v} was compiled without a label column; pass --label")
    formats = [a["format"] for a in manifest["artifacts"]]
    targets = formats if args.targets in (None, "", "same-as-champion") else [t.strip() for t in args.targets.split(",") if t.strip()]
    _say(f"champion {args.model} v{champ_v} ({', '.join(formats)}); newest registered v{newest}")
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "champion.tar"
        tar.write_bytes(client.request("GET", f"/api/v1/artifacts/{champ['sha256']}", as_bytes=True))
        try:
            scorer = Scorer.from_bundle(tar, trusted)
        except Exception as exc:  # noqa: BLE001 - verification and backend errors, reported plainly
            raise RetrainError(f"champion {args.model} v{champ_v}: cannot verify or load its bundle with the given keys: {exc}") from exc

    window = args.window_seconds if args.window_seconds else args.window_days * 86_400.0
    end = time.time()
    start = end - window
    data = client.request("GET", f"/api/v1/models/{args.model}/labeled?start={start:.3f}&end={end:.3f}")
    rows = data["rows"]
    _say(f"labeled telemetry {dt.datetime.fromtimestamp(start, dt.timezone.utc):%Y-%m-%d %H:%M:%S} .. "
         f"{dt.datetime.fromtimestamp(end, dt.timezone.utc):%H:%M:%S} UTC: {len(rows)} rows of {data['predictions']} predictions"
         + (f" ({data['labeled_without_features']} labeled without features left out)" if data["labeled_without_features"] else ""))
    n_hold = max(args.min_holdout, int(round(len(rows) * args.holdout_fraction)))
    if len(rows) < n_hold + 1:
        raise RetrainError(f"only {len(rows)} labeled rows in the window; need more than {n_hold} to hold out --min-holdout/--holdout-fraction")
    telemetry = _frame(rows, fields, label)
    hold, fresh = telemetry.iloc[-n_hold:].reset_index(drop=True), telemetry.iloc[:-n_hold].reset_index(drop=True)
    if hold[label].nunique() < 2:
        raise RetrainError(f"the held-out slice ({n_hold} rows) has only one class; widen the window")
    try:
        reference = pd.read_csv(args.reference_data)
    except (OSError, ValueError) as exc:
        raise RetrainError(f"--reference-data {args.reference_data}: {exc}") from exc
    missing = [c for c in [f["name"] for f in fields] + [label] if c not in reference.columns]
    if missing:
        raise RetrainError(f"--reference-data {args.reference_data} has no column {missing[0]!r}")
    train_df = pd.concat([reference[[f["name"] for f in fields] + [label]], fresh], ignore_index=True)
    _say(f"train_df: {len(reference)} reference + {len(fresh)} telemetry rows; held out: newest {len(hold)} labeled rows "
         f"(positive rate {float((hold[label] == manifest['output'].get('positive_class', 1)).mean()):.2f})")

    t0 = time.perf_counter()
    try:
        challenger = trainer(train_df)
    except Exception as exc:  # the user's trainer raising is the user's error, reported plainly
        raise RetrainError(f"trainer {args.trainer} failed: {type(exc).__name__}: {exc}") from exc
    if not hasattr(challenger, "predict_proba"):
        raise RetrainError(f"trainer {args.trainer} returned a {type(challenger).__name__}, which has no predict_proba")
    _say(f"trained {type(challenger).__name__} with {args.trainer} in {time.perf_counter() - t0:.1f}s")

    positive = manifest["output"].get("positive_class", manifest["output"]["classes"][-1])
    y = (hold[label].astype(str) == str(positive)).to_numpy(dtype=np.int64)
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
               for r in hold[[f["name"] for f in fields]].to_dict("records")]
    champ_scores = np.array([p.probability for p in scorer.score_many(records)])
    X = hold[list(getattr(challenger, "feature_names_in_", [f["name"] for f in fields]))]
    classes = [str(c) for c in getattr(challenger, "classes_", [])]
    col = classes.index(str(positive)) if str(positive) in classes else -1
    chal_scores = np.asarray(challenger.predict_proba(X))[:, col]
    m_champ, m_chal = _metrics(y, champ_scores), _metrics(y, chal_scores)
    gain = {k: m_chal[k] - m_champ[k] for k in m_champ}
    wins = [k for k, g in gain.items() if g >= args.margin]
    _say(f"held-out slice ({len(hold)} rows): champion v{champ_v} AUROC {m_champ['auroc']:.4f} AP {m_champ['average_precision']:.4f}; "
         f"challenger AUROC {m_chal['auroc']:.4f} AP {m_chal['average_precision']:.4f} (margin {args.margin})")
    comparison = {"champion": {"version": champ_v, **m_champ}, "challenger": m_chal, "gain": gain, "margin": args.margin,
                  "holdout_rows": len(hold), "won_on": wins, "forced": bool(args.force and not wins)}
    policy = client.request("GET", f"/api/v1/models/{args.model}/policy")["policy"]
    fair = _fairness(policy, hold, y, champ_scores, chal_scores, float(manifest["output"]["threshold"]))
    comparison["fairness"] = _clean(fair)
    for line in fair.get("refusals", []):
        _say(f"fairness: {line}")
    if fair.get("gate") and fair.get("refusals"):
        reason = f"challenger refused by the fairness policy: {fair['refusals'][0]}; nothing registered"
        _say(f"STOP: {reason}")
        return Outcome("challenger_refused", reason, provenance={"metrics": comparison, "refused": reason})
    if not wins and not args.force:
        reason = (f"challenger did not beat champion v{champ_v} by {args.margin} on AUROC or AP: "
                  f"AUROC {m_chal['auroc']:.4f} vs {m_champ['auroc']:.4f} ({gain['auroc']:+.4f}), "
                  f"AP {m_chal['average_precision']:.4f} vs {m_champ['average_precision']:.4f} ({gain['average_precision']:+.4f}); nothing registered")
        _say(f"STOP: {reason}")
        return Outcome("challenger_lost", reason, provenance={"metrics": comparison})
    _say(f"challenger wins on {', '.join(wins)}" if wins else "challenger does NOT win; --force: continuing anyway (the canary gate decides)")

    version = newest + 1
    tolerance = float((manifest.get("canary") or {}).get("tolerance", 1e-5))
    quantize = next(((p.get("quantization") or {}).get("mode") for p in manifest.get("parity", []) if p.get("quantization")), None)
    with tempfile.TemporaryDirectory() as tmp:
        result = compile_model(challenger, hold, targets=targets, name=args.model, version=version, private_key=key, label=label,
                               out_dir=Path(tmp) / f"{args.model}-v{version}", tolerance=tolerance, quantize=quantize,
                               progress=Progress(quiet=args.quiet))
        assert result.archive is not None
        archive = result.archive.read_bytes()
    gates = {"ml": {**DEFAULT_GATE, **(json.loads(args.gate) if args.gate else {})}}
    rollout_request = {"steps": DEFAULT_STEPS, "gates": gates}
    alert = None
    if args.alert:
        found = [a for a in client.request("GET", f"/api/v1/alerts?model={args.model}&limit=5000")["alerts"] if str(a["id"]) == str(args.alert)]
        alert = found[0] if found else {"id": args.alert}
    prov = {
        "created_by": "edgefleet retrain",
        "trigger": {"alert": alert} if alert else {"manual": True},
        "parent": {"name": args.model, "version": champ_v},
        "data_window": {"start": start, "end": end, "seconds": window, "labeled_rows": len(rows),
                        "holdout_start_ts": rows[-n_hold]["ts"], "telemetry_versions": data["versions"]},
        "rows": {"reference": int(len(reference)), "telemetry_train": int(len(fresh)), "holdout": int(len(hold)), "train_total": int(len(train_df))},
        "trainer": args.trainer, "reference_data": str(args.reference_data),
        "metrics": comparison, "targets": targets, "parity": [{k: p[k] for k in ("format", "max_abs_diff", "passed")} for p in result.manifest["parity"]],
        "approval_required": bool(args.approve_required), "rollout_request": rollout_request,
        "seconds": round(time.time() - t_start, 1),
    }
    up = client.request("POST", "/api/v1/models", raw=archive, headers={"X-Edgefleet-Provenance": json.dumps(prov, separators=(",", ":"))})
    _say(f"registered {args.model} v{up['version']} ({', '.join(up['formats'])}), parent v{champ_v}")
    if args.approve_required:
        reason = f"v{version} registered; its rollout waits for POST /api/v1/models/{args.model}/versions/{version}/approve"
        _say(reason)
        return Outcome("awaiting_approval", reason, version, None, prov)
    r = client.request("POST", "/api/v1/rollouts", {"model": args.model, "version": version, **rollout_request})
    _say(f"rollout {r['id']} of v{version} started: steps {'/'.join(f'{s:g}' for s in DEFAULT_STEPS)} %, ML canary gate on ({gates['ml']})")
    if args.wait:
        while r["state"] in ("running", "paused"):
            time.sleep(2)
            r = client.request("GET", f"/api/v1/rollouts/{r['id']}")
        _say(f"rollout {r['id']}: {r['state']}{(' - ' + r['reason']) if r.get('reason') else ''}")
    return Outcome("rolled_out", f"v{version} rollout {r['id']} {r['state']}", version, r["id"], prov)


def cmd_retrain(args: argparse.Namespace) -> int:
    outcome = run(args)
    out: dict[str, Any] = {"decision": outcome.decision, "reason": outcome.reason, "version": outcome.version, "rollout_id": outcome.rollout_id}
    if outcome.decision == "challenger_refused":  # nothing is registered, so the refusal's provenance is printed here
        out["provenance"] = outcome.provenance
    print(json.dumps(out))
    return outcome.exit_code


def add_parser(sub: Any) -> None:
    r = sub.add_parser("retrain", help="retrain on reference + labeled telemetry; champion/challenger; compile, upload, staged rollout")
    r.add_argument("--server", default=os.environ.get("EDGEFLEET_SERVER", "http://127.0.0.1:8080"), help="fleet server URL")
    r.add_argument("--token-file", default="fleet-data/secrets/admin-token", help="admin token file (or EDGEFLEET_ADMIN_TOKEN)")
    r.add_argument("--model", required=True, help="model name")
    r.add_argument("--trainer", required=True, help="module:function or path/file.py:function; function(train_df) -> fitted estimator")
    r.add_argument("--reference-data", required=True, help="CSV of the original training data (input fields + label)")
    r.add_argument("--key", required=True, help="Ed25519 private key that signs the challenger (its public half verifies the champion)")
    r.add_argument("--pubkey", action="append", help="more public keys to verify the champion bundle with; repeatable")
    r.add_argument("--window-days", type=float, default=30.0, help="labeled telemetry from the last N days (default 30)")
    r.add_argument("--window-seconds", type=float, help="the same in seconds (overrides --window-days; time-compressed simulations)")
    r.add_argument("--holdout-fraction", type=float, default=0.3, help="newest fraction of labeled rows held out for champion vs challenger")
    r.add_argument("--min-holdout", type=int, default=200, help="at least this many held-out rows")
    r.add_argument("--margin", type=float, default=0.01, help="the challenger must beat the champion by this on AUROC or AP")
    r.add_argument("--targets", default="same-as-champion", help="comma-separated formats (default: every format the champion has)")
    r.add_argument("--label", help="label column (default: the champion manifest's)")
    r.add_argument("--alert", help="id of the alert that triggered this run (recorded in provenance)")
    r.add_argument("--approve-required", action="store_true", help="register only; roll out after POST .../versions/<v>/approve")
    r.add_argument("--gate", help=f"JSON overrides of the ML canary gate (default {json.dumps(DEFAULT_GATE)})")
    r.add_argument("--force", action="store_true", help="skip the champion/challenger check (demo: let the canary gate decide)")
    r.add_argument("--wait", action="store_true", help="follow the rollout until it completes or halts")
    r.add_argument("--quiet", action="store_true", help="no compile progress")
    r.set_defaults(func=cmd_retrain)
