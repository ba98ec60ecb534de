"""PMML target: sklearn2pmml for the conversion, then threshold rewriting for exact parity.

The precision fix, measured here: for DecisionTree, RandomForest, ExtraTrees and
GradientBoosting, sklearn compares ``float32(x)`` with a double threshold ``t``. sklearn2pmml
declares those derived fields ``dataType="float"`` and writes each threshold as F, the largest
float32 <= t (true for all 56k thresholds checked). pypmml ignores the float declaration and
compares the double x with F, taking the other branch whenever x lies in (F, t]: RF probabilities
moved by up to 0.03 here. For every ``SimplePredicate`` on a float field we write instead the
double cut point b with ``x <= b  <=>  float32(x) <= F`` for every double x (the midpoint
between F and the next float32, nudged down when round-half-to-even would round it up). Since
no float32 lies in (F, t], that is exactly sklearn's test, and it stays exact for evaluators
that honour ``dataType="float"`` (JPMML). HistGradientBoosting compares in double and its fields
are double, so it is untouched. The parity gate checks the outcome on every compile.

The one target that needs the source model: it asks ``ir.source_model("sklearn-pipeline")``
(``compiler.ir.SourceCapability``) and refuses a model whose frontend exposes none.

Two more rewrites: a missing string input is replaced by a sentinel category, so one-hot and
ordinal encoders treat it as unseen (as sklearn does) instead of propagating a missing value;
and the header timestamp is set to the bundle's ``created_at`` so the artifact is reproducible.

pypmml's ``Model.predict(DataFrame)`` goes through ``DataFrame.to_json``, which keeps only 10
decimals (1e-12 became 0.0), so ``PmmlSession`` builds the JSON itself.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from compiler.errors import CompileError, TargetUnavailableError
from compiler.targets import Artifact

if TYPE_CHECKING:
    import pandas as pd

    from compiler.ir import ModelIR

PMML_NS = "http://www.dmg.org/PMML-4_4"
_N = "{%s}" % PMML_NS
MISSING_SENTINEL = "__missing__"
SOURCE = "sklearn-pipeline"  # the IR capability this target converts (compiler.ir.SourceCapability)
INSTALL_HINT = "install a Java runtime (apt-get install default-jre-headless) and pip install 'edgefleet[pmml]'"


def _f32_boundary(f: np.float32) -> float:
    """The double b with (x <= b) == (float32(x) <= f) for every non-NaN double x."""
    up = np.nextafter(f, np.float32(np.inf))
    if np.isinf(up):
        return float(np.finfo(np.float64).max)
    mid = (float(f) + float(up)) / 2.0  # exact in double
    return mid if np.float32(mid) == f else float(np.nextafter(mid, -np.inf))


def rewrite_float_thresholds(root: ET.Element) -> int:
    """Rewrite every threshold on a float-declared field; return how many were rewritten."""
    float_fields = {
        e.get("name") for tag in ("DataField", "DerivedField") for e in root.iter(_N + tag) if e.get("dataType") == "float"
    }
    n = 0
    for pred in root.iter(_N + "SimplePredicate"):
        op = pred.get("operator")
        if pred.get("field") not in float_fields or op in ("equal", "notEqual", "isMissing", "isNotMissing"):
            continue
        f = np.float32(pred.get("value"))
        if op in ("lessThan", "greaterOrEqual"):  # float32(x) < F  <=>  float32(x) <= prev(F)
            f = np.nextafter(f, np.float32(-np.inf))
            pred.set("operator", "lessOrEqual" if op == "lessThan" else "greaterThan")
        pred.set("value", repr(_f32_boundary(f)))
        n += 1
    return n


def _missing_strings_as_unseen(root: ET.Element, fields: set[str]) -> None:
    dd = root.find(_N + "DataDictionary")
    if dd is None:
        return
    str_fields = {f.get("name") for f in dd.findall(_N + "DataField") if f.get("dataType") == "string"} & fields
    for schema in root.iter(_N + "MiningSchema"):
        for mf in schema.findall(_N + "MiningField"):
            if mf.get("name") in str_fields and mf.get("usageType", "active") == "active" and mf.get("missingValueReplacement") is None:
                mf.set("missingValueReplacement", MISSING_SENTINEL)
        break  # only the top-level model's schema sees raw inputs


def _records_json(frame: "pd.DataFrame", names: Sequence[str]) -> str:
    """pypmml's split-orient JSON at full double precision; None for missing."""
    import pandas as pd

    cols = []
    for c in names:
        s = frame[c]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            vals = s.to_numpy(dtype=np.float64, na_value=np.nan).tolist()
            cols.append([None if math.isnan(v) else v for v in vals])
        else:
            cols.append([None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v) for v in s.astype(object).tolist()])
    return json.dumps({"columns": list(names), "data": [list(r) for r in zip(*cols)]}, allow_nan=False)


class PmmlSession:
    """A loaded PMML model in pypmml's JVM, scoring DataFrames into class probabilities."""

    def __init__(self, data: bytes, classes: Sequence[Any]) -> None:
        from pypmml import Model

        with tempfile.NamedTemporaryFile(suffix=".pmml", delete=False) as fh:
            fh.write(data)
            path = fh.name
        try:
            self.model = Model.fromFile(path)
        finally:
            os.unlink(path)
        self.classes = list(classes)
        self.inputs = list(self.model.inputNames)
        outs = list(self.model.outputNames)
        self.prob_cols = [f"probability({c})" for c in self.classes]
        missing = [c for c in self.prob_cols if c not in outs]
        if missing:
            raise CompileError(f"pmml target: the PMML has no output {missing[0]}; outputs are {outs}")

    def predict(self, frame: "pd.DataFrame") -> np.ndarray:
        res = json.loads(self.model.call("predict", _records_json(frame, self.inputs)))
        idx = [res["columns"].index(c) for c in self.prob_cols]
        return np.array([[math.nan if r[j] is None else float(r[j]) for j in idx] for r in res["data"]], dtype=np.float64)


def score_file(path: str, frame: "pd.DataFrame", classes: Sequence[Any]) -> np.ndarray:
    with open(path, "rb") as fh:
        return PmmlSession(fh.read(), classes).predict(frame)


class PmmlTarget:
    name = "pmml"
    runtime = "pypmml"

    def check_available(self) -> None:
        if shutil.which("java") is None:
            raise TargetUnavailableError(f"the pmml target needs Java on PATH, and none was found; {INSTALL_HINT}")
        try:
            import pypmml  # noqa: F401
            import sklearn2pmml  # noqa: F401
        except ImportError as exc:
            raise TargetUnavailableError(f"the pmml target needs sklearn2pmml and pypmml ({exc}); {INSTALL_HINT}") from exc

    def check_available_for(self, ir: "ModelIR") -> None:
        from compiler.ir import SparkEstimator

        if isinstance(ir.estimator, SparkEstimator):  # a Spark model converts with pyspark2pmml, not sklearn2pmml
            from compiler.targets import pmml_spark

            pmml_spark.check_available()

    def unsupported_reason(self, ir: "ModelIR") -> str | None:
        from compiler.ir import SparkEstimator

        if isinstance(ir.estimator, SparkEstimator):
            return None if ir.has_capability("spark-pipeline") else "the Spark frontend exposed no 'spark-pipeline' source model"
        if not ir.has_capability(SOURCE):
            return (f"sklearn2pmml converts the source scikit-learn pipeline, and this model's frontend exposes no "
                    f"{SOURCE!r} source model ({type(ir.estimator).__name__} {ir.estimator.family})")
        return None

    def runtime_version(self) -> str:
        from importlib.metadata import version

        return version("pypmml")

    def build(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        from compiler.ir import SparkEstimator

        if isinstance(ir.estimator, SparkEstimator):
            from compiler.targets import pmml_spark

            data, notes = pmml_spark.build_pmml(ir, meta.get("created_at"))
            return self._artifact(ir, data, notes)
        from sklearn2pmml import make_pmml_pipeline, sklearn2pmml

        model = copy.deepcopy(ir.source_model(SOURCE))  # sklearn2pmml's configure() mutates the estimator
        names = getattr(model, "feature_names_in_", None)
        active = [str(c) for c in names] if names is not None else ir.field_names
        try:
            pp = make_pmml_pipeline(model, active_fields=active, target_fields=["__target__"])
            with tempfile.TemporaryDirectory() as tmp:
                raw = os.path.join(tmp, "model.pmml")
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    sklearn2pmml(pp, raw)
                ET.register_namespace("", PMML_NS)
                ET.register_namespace("data", "http://jpmml.org/jpmml-model/InlineTable")
                doc = ET.parse(raw)
        except Exception as exc:  # sklearn2pmml raises RuntimeError with the Java stack, or TypeError
            raise CompileError(f"pmml target: sklearn2pmml could not convert {ir.estimator.family}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}") from exc
        root = doc.getroot()
        rewritten = rewrite_float_thresholds(root)
        _missing_strings_as_unseen(root, {f.name for f in ir.fields if f.type == "categorical" and f.missing == "unseen"})
        stamp = root.find(f"{_N}Header/{_N}Timestamp")
        if stamp is not None and meta.get("created_at"):
            stamp.text = str(meta["created_at"])
        buf = io.BytesIO()
        doc.write(buf, encoding="UTF-8", xml_declaration=True)
        return self._artifact(ir, buf.getvalue(), [f"{rewritten} float32 tree thresholds rewritten to exact double cut points"] if rewritten else [])

    def _artifact(self, ir: "ModelIR", data: bytes, notes: list[str]) -> Artifact:
        kinds = {"numeric": "float64", "boolean": "float64", "categorical": "string"}
        return Artifact(
            format="pmml",
            filename="model.pmml",
            data=data,
            runtime=self.runtime,
            runtime_min_version="1.5",
            input_kind="fields",
            inputs=[{"name": f.name, "dtype": kinds[f.type]} for f in ir.fields],
            outputs=[{"name": f"probability({c})", "dtype": "float64"} for c in ir.estimator.classes],
            notes=notes,
        )

    def score(self, artifact: Artifact, ir: "ModelIR", features: np.ndarray, frame: "pd.DataFrame") -> np.ndarray:
        try:
            return PmmlSession(artifact.data, ir.estimator.classes).predict(frame)
        except CompileError:
            raise
        except Exception as exc:  # py4j / JVM errors
            raise CompileError(f"pmml target: pypmml could not score the artifact: {type(exc).__name__}: {exc}") from exc
