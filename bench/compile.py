"""Compile time per target and artifact sizes for the 100-tree RandomForest churn pipeline.

Baselines come from the same run, so the ratios survive a noisy shared machine:
* compile time per target vs the time to fit the model;
* artifact size vs the joblib pickle of the fitted pipeline;
* scoring one row / a 1,000-row batch with each artifact's real runtime vs sklearn predict_proba.

    .venv/bin/python bench/compile.py [--rows 6000] [--targets onnx,pmml]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def _timed(fn, repeat: int = 1) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    import joblib
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from train_churn import make_pipeline

    from compiler import compile as compile_model
    from edgefleet.encoding import encode_columns
    from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--targets", default="onnx,pmml")
    args = ap.parse_args()
    targets = args.targets.split(",")

    df = make_telco_churn(args.rows, seed=7)
    split = int(len(df) * 0.7)
    train, holdout = df.iloc[:split], df.iloc[split:].reset_index(drop=True)
    fit_s, model = _timed(lambda: make_pipeline("rf").fit(train[CATEGORICAL + NUMERIC], train[LABEL]))
    buf = io.BytesIO()
    joblib.dump(model, buf)
    pickle_size = buf.tell()
    key = Ed25519PrivateKey.generate()
    X = holdout[CATEGORICAL + NUMERIC]

    print(f"RandomForest(100) churn pipeline: fit {fit_s:.2f}s on {len(train)} rows; joblib {pickle_size / 1024:.0f} KiB")
    print(f"{'target':8} {'compile s':>9} {'x fit':>6} {'size KiB':>9} {'x pickle':>8} {'max|dp|':>9}")
    results = {}
    for t in targets:
        secs, res = _timed(lambda: compile_model(model, holdout, targets=[t], name="bench", version=1, private_key=key, label=LABEL))
        art = res.manifest["artifacts"][0]
        par = res.manifest["parity"][0]
        results[t] = res
        print(f"{t:8} {secs:9.2f} {secs / fit_s:6.2f} {art['size'] / 1024:9.0f} {art['size'] / pickle_size:8.2f} {par['max_abs_diff']:9.2g}")

    # Scoring speed with each real runtime, against sklearn in the same run.
    one = X.iloc[:1]
    batch = X.iloc[:1000]
    sk1, _ = _timed(lambda: model.predict_proba(one), repeat=50)
    skb, _ = _timed(lambda: model.predict_proba(batch), repeat=5)
    print(f"\nscoring           {'1 row':>10} {'x sklearn':>9} {'1000 rows':>10} {'x sklearn':>9}")
    print(f"{'sklearn':16} {sk1 * 1e3:9.3f}ms {1.0:9.2f} {skb * 1e3:9.1f}ms {1.0:9.2f}")
    for t, res in results.items():
        fields = res.manifest["input_schema"]["fields"]
        art = next(iter(res.files[k] for k in res.files if k.startswith("artifacts/")))
        if t == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(art, opts, providers=["CPUExecutionProvider"])
            f1, fb = encode_columns(fields, one), encode_columns(fields, batch)
            r1, _ = _timed(lambda: sess.run(["probabilities"], {"features": f1}), repeat=200)
            rb, _ = _timed(lambda: sess.run(["probabilities"], {"features": fb}), repeat=20)
            print(f"{'onnxruntime':16} {r1 * 1e3:9.3f}ms {sk1 / r1:9.2f} {rb * 1e3:9.1f}ms {skb / rb:9.2f}   (1 thread, tensor already encoded)")
            r1, _ = _timed(lambda: sess.run(["probabilities"], {"features": encode_columns(fields, one)}), repeat=200)
            rb, _ = _timed(lambda: sess.run(["probabilities"], {"features": encode_columns(fields, batch)}), repeat=20)
            label = "ort+encode"
        else:
            from compiler.targets.pmml import PmmlSession

            sess = PmmlSession(art, res.manifest["output"]["classes"])
            r1, _ = _timed(lambda: sess.predict(one), repeat=20)
            rb, _ = _timed(lambda: sess.predict(batch), repeat=3)
            label = "pypmml"
        note = "(encoding a DataFrame with edgefleet.encoding included)" if t == "onnx" else "(JVM via py4j, JSON in and out)"
        print(f"{label:16} {r1 * 1e3:9.3f}ms {sk1 / r1:9.2f} {rb * 1e3:9.1f}ms {skb / rb:9.2f}   {note}")
    print("\n'x sklearn' > 1 means faster than sklearn predict_proba on a DataFrame.")


if __name__ == "__main__":
    main()
