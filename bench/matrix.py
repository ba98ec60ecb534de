"""Model x target support matrix from a real run: compile time, artifact size and max |dp| per cell.

Every model family (the churn pipelines from ``examples/train_churn.py``, a Keras MLP with a
Normalization layer, and Spark ML pipelines: StringIndexer(keep) + OneHotEncoder + Imputer +
VectorAssembler + LR/DT/RF/GBT) is compiled to every target, one target per compile, and scored
by that target's parity runtime on the 1,200 held-out rows. For the Spark rows the reference is
Spark's own ``transform``, and the held-out rows include 30 with an unseen category and 10 with
a missing one. A cell is ``runtime max|dp|`` or ``not supported: reason`` (the compiler's own
error text).

    .venv/bin/python bench/matrix.py                   # table on stdout
    .venv/bin/python bench/matrix.py --readme README.md  # also rewrite the README's matrix block

The README block sits between ``<!-- matrix:start -->`` and ``<!-- matrix:end -->``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

MODELS = ["lr", "dt", "rf", "et", "gb", "hgb", "mlp", "keras", "spark-lr", "spark-dt", "spark-rf", "spark-gbt"]
TARGETS = ["onnx", "pmml", "coreml", "tflite", "tfjs", "spark", "pickle"]
NAMES = {"lr": "LogisticRegression", "dt": "DecisionTree", "rf": "RandomForest (100)", "et": "ExtraTrees (100)",
         "gb": "GradientBoosting", "hgb": "HistGradientBoosting", "mlp": "MLPClassifier (32, 16)", "keras": "Keras MLP (Normalization, Dense 16)",
         "spark-lr": "Spark LogisticRegression (one-hot)", "spark-dt": "Spark DecisionTree (one-hot, depth 6)",
         "spark-rf": "Spark RandomForest (20, one-hot)", "spark-gbt": "Spark GBT (20, one-hot)"}
SHORT = {"onnxruntime": "onnxruntime", "pypmml": "pypmml", "ai-edge-litert": "ai-edge-litert", "@tensorflow/tfjs": "tfjs (Node)",
         "pyspark": "Spark", "scikit-learn": "scikit-learn (fresh process)"}


def _spark_frame(spark: Any, frame: Any) -> Any:
    import numpy as np
    from pyspark.sql import types as T

    from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC

    schema = T.StructType([T.StructField(c, T.StringType(), True) for c in CATEGORICAL]
                          + [T.StructField(c, T.DoubleType(), True) for c in NUMERIC + [LABEL]])
    rows = [tuple(None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in r[: len(CATEGORICAL)])
            + tuple(float(v) for v in r[len(CATEGORICAL):]) for r in frame[CATEGORICAL + NUMERIC + [LABEL]].itertuples(index=False)]
    return spark.createDataFrame(rows, schema)


def _spark(kind: str, train: Any) -> Any:
    """A fitted Spark PipelineModel: StringIndexer(keep) + OneHotEncoder + Imputer + VectorAssembler + one classifier."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import DecisionTreeClassifier, GBTClassifier, LogisticRegression, RandomForestClassifier
    from pyspark.ml.feature import Imputer, OneHotEncoder, StringIndexer, VectorAssembler

    from compiler.frontends.spark import session
    from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC

    spark = session()
    spark.sparkContext.setLogLevel("ERROR")
    idx, ohe, imp = ([f"{c}_{s}" for c in cols] for s, cols in (("idx", CATEGORICAL), ("ohe", CATEGORICAL), ("imp", NUMERIC)))
    makers: dict[str, Any] = {"lr": LogisticRegression, "dt": DecisionTreeClassifier, "rf": RandomForestClassifier, "gbt": GBTClassifier}
    params: dict[str, dict[str, Any]] = {"lr": {"maxIter": 50}, "dt": {"maxDepth": 6, "seed": 1}, "rf": {"numTrees": 20, "maxDepth": 5, "seed": 1},
                                         "gbt": {"maxIter": 20, "maxDepth": 3, "seed": 1}}
    clf = makers[kind](labelCol=LABEL, **params[kind])
    stages: list[Any] = [StringIndexer(inputCols=CATEGORICAL, outputCols=idx, handleInvalid="keep"), OneHotEncoder(inputCols=idx, outputCols=ohe),
              Imputer(inputCols=NUMERIC, outputCols=imp), VectorAssembler(inputCols=ohe + imp, outputCol="features"), clf]
    return Pipeline(stages=stages).fit(_spark_frame(spark, train))


def _spark_holdout(holdout: Any) -> Any:
    hold = holdout.copy()
    hold["Contract"] = hold["Contract"].astype(object)
    hold.loc[0:19, "Contract"] = "Three year"
    hold.loc[20:29, "PaymentMethod"] = "Bitcoin"
    hold.loc[30:39, "InternetService"] = None
    return hold


def _keras(train: Any, tmp: Path) -> Any:
    import keras
    import numpy as np

    from compiler.frontends.keras import KerasModel
    from edgefleet_cli.samples.telco_churn import LABEL, NUMERIC

    tr = train.dropna(subset=NUMERIC)
    X = tr[NUMERIC].to_numpy(np.float32)
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization()
    norm.adapt(X)
    m = keras.Sequential([keras.Input((len(NUMERIC),)), norm, keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy")
    m.fit(X, tr[LABEL].to_numpy().astype(np.float32), epochs=5, batch_size=64, verbose=0)
    m.save(tmp / "churn.keras")
    return KerasModel.load(tmp / "churn.keras", NUMERIC, classes=[0, 1])


def _cell(model: Any, holdout: Any, target: str, key: Any) -> dict[str, Any]:
    from compiler import CompileError, compile

    t0 = time.perf_counter()
    try:
        res = compile(model, holdout, targets=[target], name="matrix", private_key=key, label="Churn", allow_parity_failure=True)
    except CompileError as exc:
        if "cannot take model" in str(exc):
            return {"ok": False, "reason": str(exc).split(": ", 1)[-1]}
        return {"ok": False, "reason": f"ERROR {exc}"}  # a failure, not a limitation: shown as such
    rep, art = res.manifest["parity"][0], res.manifest["artifacts"][0]
    return {"ok": rep["passed"], "seconds": time.perf_counter() - t0, "size": art["size"], "dp": rep["max_abs_diff"],
            "runtime": rep["runtime"], "reason": None if rep["passed"] else f"parity failed: max |dp| {rep['max_abs_diff']}"}


def _text(c: dict[str, Any]) -> str:
    if c.get("dp") is None:
        return c["reason"] if c["reason"].startswith("ERROR") else f"not supported: {c['reason']}"
    rt = "reference evaluator" if c["runtime"] == "reference-evaluator" else SHORT.get(c["runtime"], c["runtime"])
    return f"{rt} {c['dp']:.1e}" + ("" if c["ok"] else " FAILED")


def markdown(cells: dict[tuple[str, str], dict[str, Any]]) -> str:
    lines = ["| model | " + " | ".join(TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]
    for m in MODELS:
        lines.append(f"| {NAMES[m]} | " + " | ".join(_text(cells[m, t]) for t in TARGETS) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", help="rewrite the matrix block of this README")
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args()

    import logging

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from train_churn import make_pipeline

    from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    df = make_telco_churn(4000, seed=1)
    train, holdout = df.iloc[:2800].reset_index(drop=True), df.iloc[2800:].reset_index(drop=True)
    key = Ed25519PrivateKey.generate()
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    print(f"{'model':<8}{'target':<8}{'compile s':>10}{'size B':>11}  max |dp| / reason", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.models.split(","):
            if m.startswith("spark-"):
                model, rows = _spark(m.split("-", 1)[1], train), _spark_holdout(holdout)
            else:
                model, rows = _keras(train, Path(tmp)) if m == "keras" else make_pipeline(m).fit(train[CATEGORICAL + NUMERIC], train[LABEL]), holdout
            for t in TARGETS:
                c = cells[m, t] = _cell(model, rows, t, key)
                if c.get("dp") is None:
                    print(f"{m:<8}{t:<8}{'-':>10}{'-':>11}  not supported: {c['reason']}", flush=True)
                else:
                    print(f"{m:<8}{t:<8}{c['seconds']:>10.1f}{c['size']:>11}  {c['runtime']} {c['dp']:.2e}{'' if c['ok'] else ' FAILED'}", flush=True)
    if set(args.models.split(",")) != set(MODELS):
        return
    table = markdown(cells)
    print("\n" + table)
    if args.readme:
        path = Path(args.readme)
        text = path.read_text()
        block = re.compile(r"(<!-- matrix:start -->\n).*?(\n<!-- matrix:end -->)", re.S)
        if not block.search(text):
            sys.exit(f"{path} has no <!-- matrix:start --> ... <!-- matrix:end --> block")
        path.write_text(block.sub(lambda mo: mo.group(1) + table + mo.group(2), text))
        print(f"wrote the matrix into {path}")


if __name__ == "__main__":
    main()
