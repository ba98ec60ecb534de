"""Spark ML frontend: a saved ``pyspark.ml.PipelineModel`` lowered into ``ModelIR``.

    edgefleet compile MODEL_DIR ...            # a PipelineModel saved with model.write().save()
    compile(pipeline_model, sample, ...)       # a PipelineModel object (saved to a temp folder first)

The stages are read from the saved folder (each stage's ``metadata`` JSON and ``data`` Parquet,
with pyarrow), not through py4j, so the tree structure is Spark's own node table. Supported:

    StringIndexer   a categorical field; handleInvalid ``keep`` -> unseen "ignore", missing
                    "unseen" (Spark's extra bucket); ``error`` and ``skip`` -> "reject" (a device
                    refuses the row Spark would fail on or drop)
    OneHotEncoder   one-hot columns, ``dropLast`` true or false (with ``keep`` the dropped or
                    kept last slot is the unseen bucket: all zeros, or its own 1 column)
    Imputer         ``fillnan`` with the surrogate (missingValue must be NaN); numeric "impute"
    VectorAssembler concatenation; ``handleInvalid`` error/skip (a NaN reaching it is refused)
    StandardScaler  ``(x - mean) * (1/std)`` as Spark computes it (0 for std 0)
    MinMaxScaler    ``(x - min) * (scale/range) + min``, the constant output for a constant column
    LogisticRegressionModel                         ``compiler.lowering.Linear`` (expit or softmax)
    DecisionTree/RandomForest/GBTClassificationModel ``compiler.lowering.Forest``

Any other stage raises ``UnsupportedStepError`` naming the stage class and its position.

Precision: Spark evaluates its trees on the double feature (``x <= threshold``), with no
float32 cast, so the forest is folded with ``float32=False`` (``compiler.lowering.exact``): every
target's decisions are integer key comparisons equal to Spark's for every double input.

Categorical splits, the known trap (onnxmltools reads ``leftCategoriesOrThreshold[0]`` as a
``<=`` threshold): a Spark node on a categorical feature (a one-hot column: 2 categories; a
StringIndexer index fed straight in: its label count) sends ``x in leftCategories`` left.
Feature values are the category codes 0..k-1, so a left set that is a prefix {0..m} is
``x <= m + 0.5``, a suffix {m..k-1} is ``x <= m - 0.5`` with the children swapped, and any
other set is refused by name. For a one-hot column ``{1.0}`` goes left becomes "``x <= 0.5``
goes right". A categorical split on a column that a scaler changed is refused.

The parity gate's reference is Spark's own ``transform`` (``SparkPipeline.predict_proba``).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from compiler.errors import CompileError, UnsupportedStepError
from compiler.ir import Column, Field, Layer, ModelIR, SourceCapability, SparkEstimator

if TYPE_CHECKING:
    import pandas as pd

CAPABILITY = "spark-pipeline"
CLASSIFIERS = {"LogisticRegressionModel", "DecisionTreeClassificationModel", "RandomForestClassificationModel", "GBTClassificationModel"}
TRANSFORMERS = {"StringIndexerModel", "OneHotEncoderModel", "ImputerModel", "VectorAssembler", "StandardScalerModel", "MinMaxScalerModel"}
TARGETS = ["coreml", "onnx", "pmml", "spark", "tflite", "tfjs"]


def session() -> Any:
    """The active SparkSession, or a local one bound to 127.0.0.1 with its UI off."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return (SparkSession.builder.master("local[1]").appName("edgefleet-compile")
            .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())


class SparkPipeline:
    """A saved Spark ``PipelineModel``: its folder, the loaded model, and Spark scoring of pandas rows."""

    def __init__(self, path: str | os.PathLike[str], model: Any = None, owned_dir: str | None = None) -> None:
        self.path = Path(path)
        self._model = model
        self._owned = owned_dir
        self.label_col: str | None = None  # set by the lowering: the classifier's labelCol
        self.label_indexed = False  # whether a StringIndexer made that label (string classes)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "SparkPipeline":
        p = Path(path)
        if not (p / "metadata").is_dir() or not (p / "stages").is_dir():
            raise CompileError(f"{os.fspath(path)} is not a saved Spark PipelineModel (no metadata/ and stages/ folders)")
        return cls(p)

    @classmethod
    def wrap(cls, model: Any) -> "SparkPipeline":
        """Save a ``PipelineModel`` object to a temp folder, the form the frontend and the spark target read."""
        tmp = tempfile.mkdtemp(prefix="edgefleet-spark-")
        path = os.path.join(tmp, "model")
        try:
            model.write().overwrite().save(path)
        except Exception as exc:  # py4j errors carry the JVM's message
            shutil.rmtree(tmp, ignore_errors=True)
            raise CompileError(f"cannot save the Spark PipelineModel: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        return cls(path, model, tmp)

    @property
    def model(self) -> Any:
        if self._model is None:
            from pyspark.ml import PipelineModel

            session()
            try:
                self._model = PipelineModel.load(str(self.path))
            except Exception as exc:  # py4j/JVM errors
                raise CompileError(f"Spark cannot load the PipelineModel at {self.path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        return self._model

    def predict_proba(self, frame: "pd.DataFrame", fields: Sequence[Field]) -> np.ndarray:
        """Spark's ``transform`` probabilities for ``frame`` (rows Spark drops come back NaN)."""
        return transform_proba(self.model, frame, fields)

    def __del__(self) -> None:
        if self._owned:
            shutil.rmtree(self._owned, ignore_errors=True)


def transform_proba(model: Any, frame: "pd.DataFrame", fields: Sequence[Field]) -> np.ndarray:
    from pyspark.sql import types as T

    kinds = {"numeric": T.DoubleType(), "boolean": T.BooleanType(), "categorical": T.StringType()}
    schema = T.StructType([T.StructField("_edgefleet_row", T.LongType(), False)]
                          + [T.StructField(f.name, kinds[f.type], True) for f in fields])

    def cell(f: Field, v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None if f.type != "numeric" else float("nan")
        if f.type == "numeric":
            return float(v)
        return bool(v) if f.type == "boolean" else str(v)

    cols = [frame[f.name].tolist() for f in fields]
    rows = [(i, *(cell(f, col[i]) for f, col in zip(fields, cols))) for i in range(len(frame))]
    spark = session()
    out = model.transform(spark.createDataFrame(rows, schema)).select("_edgefleet_row", "probability").collect()
    got = {int(r[0]): r[1].toArray() for r in out}
    width = len(next(iter(got.values()))) if got else 2
    proba = np.full((len(frame), width), np.nan)
    for i, v in got.items():
        proba[i] = v
    return proba


# -- reading the saved folder ------------------------------------------------------------------

@dataclass
class _Stage:
    position: int
    cls: str  # short class name: StringIndexerModel
    params: dict[str, Any]
    path: Path

    def data(self, sub: str = "data") -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        files = sorted(glob.glob(str(self.path / sub / "*.parquet")))
        rows: list[dict[str, Any]] = []
        for f in files:
            rows.extend(pq.read_table(f).to_pylist())
        return rows

    def cols(self, single: str, multi: str) -> list[str]:
        v = self.params.get(multi)
        if v:
            return list(v)
        return [self.params[single]] if self.params.get(single) else []


def _metadata(path: Path) -> dict[str, Any]:
    files = sorted(glob.glob(str(path / "metadata" / "part-*")))
    if not files:
        raise CompileError(f"{path}: no metadata/part-* file (not a saved Spark ML stage)")
    with open(files[0]) as fh:
        meta: dict[str, Any] = json.loads(fh.readline())
    return meta


def read_stages(root: Path) -> list[_Stage]:
    top = _metadata(root)
    if not str(top.get("class", "")).endswith("PipelineModel"):
        raise CompileError(f"{root} holds a {top.get('class')}, not a Spark PipelineModel")
    dirs = {int(m.group(1)): d for d in glob.glob(str(root / "stages" / "*")) if (m := re.match(r"(\d+)_", os.path.basename(d)))}
    out = []
    for i in sorted(dirs):
        meta = _metadata(Path(dirs[i]))
        params = {**meta.get("defaultParamMap", {}), **meta.get("paramMap", {})}
        out.append(_Stage(i, str(meta["class"]).rsplit(".", 1)[-1], params, Path(dirs[i])))
    return out


def _vector(v: Any) -> np.ndarray:
    """A Spark VectorUDT as pyarrow reads it: {type 0 sparse / 1 dense, size, indices, values}."""
    if v is None:
        return np.zeros(0)
    if int(v["type"]) == 1:
        return np.asarray(v["values"], dtype=np.float64)
    out = np.zeros(int(v["size"]))
    out[np.asarray(v["indices"], dtype=np.int64)] = np.asarray(v["values"], dtype=np.float64)
    return out


# -- the lowering --------------------------------------------------------------------------------

@dataclass
class _Col:
    column: Column
    ops: list[tuple[str, float]] = field(default_factory=list)
    n_categories: int | None = None  # the tree-facing categorical arity (2 for one-hot), None: continuous


@dataclass
class _Index:
    field: int
    n_labels: int
    keep: bool


class SparkFrontend:
    name = "spark"

    def accepts(self, model: Any) -> bool:
        return isinstance(model, SparkPipeline) or (type(model).__module__.startswith("pyspark.ml") and type(model).__name__ == "PipelineModel")

    def source_proba(self, model: Any, frame: "pd.DataFrame", ir: ModelIR) -> np.ndarray:
        pipe: SparkPipeline = ir.source_model(CAPABILITY)
        return pipe.predict_proba(frame, ir.fields)

    def lower(self, model: Any, sample: "pd.DataFrame") -> ModelIR:
        pipe = model if isinstance(model, SparkPipeline) else SparkPipeline.wrap(model)
        stages = read_stages(pipe.path)
        if not stages:
            raise CompileError("the Spark PipelineModel has no stages")
        clf = next((s for s in stages if s.cls in CLASSIFIERS), None)
        for s in stages:
            if s.cls not in CLASSIFIERS | TRANSFORMERS:
                raise UnsupportedStepError(s.cls, f"stage {s.position}", "this Spark stage has no edgefleet lowering "
                                           f"(supported: {', '.join(sorted(TRANSFORMERS | CLASSIFIERS))})")
        if clf is None:
            raise CompileError("the Spark PipelineModel has no classifier stage (LogisticRegression, DecisionTree, RandomForest or GBT)")
        if clf is not stages[-1]:
            after = stages[stages.index(clf) + 1]
            raise UnsupportedStepError(after.cls, f"stage {after.position}", "a stage after the classifier is not supported")
        return _Lowering(pipe, stages, sample).run(clf)


class _Lowering:
    def __init__(self, pipe: SparkPipeline, stages: list[_Stage], sample: "pd.DataFrame") -> None:
        self.pipe, self.stages, self.sample = pipe, stages, sample
        self.names: list[str] = []
        self.cats: dict[int, tuple[tuple[Any, ...], bool, str]] = {}  # field -> (labels, keep, handleInvalid)
        self.raw_uses: set[int] = set()  # numeric fields some column reads unimputed
        self.imputed: set[int] = set()
        self.values: dict[str, Any] = {}  # Spark column name -> _Col | list[_Col] | _Index
        self.label_classes: tuple[Any, ...] | None = None

    def _field(self, name: str, where: str) -> int:
        if name not in self.sample.columns:
            raise CompileError(f"{where} reads column {name!r}, which is not in the sample; sample columns: {', '.join(map(str, self.sample.columns))}")
        if name not in self.names:
            self.names.append(name)
        return self.names.index(name)

    def _input(self, name: str, where: str) -> Any:
        if name in self.values:
            return self.values[name]
        i = self._field(name, where)
        if i in self.cats:
            raise CompileError(f"{where}: column {name!r} is a string field; index it with StringIndexer first")
        self.raw_uses.add(i)
        return _Col(Column(i, "value"))

    def run(self, clf: _Stage) -> ModelIR:
        label_col = clf.params.get("labelCol", "label")
        for s in self.stages[:-1]:
            getattr(self, f"_{s.cls}")(s, label_col)
        feats = self.values.get(clf.params.get("featuresCol", "features"))
        where = f"stage {clf.position} ({clf.cls})"
        if not isinstance(feats, list):
            raise CompileError(f"{where}: its featuresCol {clf.params.get('featuresCol')!r} is not a vector built by the pipeline")
        head, classes, threshold = self._head(clf, feats, where)
        self.pipe.label_col, self.pipe.label_indexed = label_col, self.label_classes is not None  # for PMML's target field
        fields = _fields(self)
        layers = _layers(feats)
        return ModelIR(
            framework="pyspark", framework_version=_pyspark_version(),
            estimator_chain=tuple(s.cls for s in self.stages),
            fields=fields, columns=tuple(c.column for c in feats), layers=layers,
            estimator=SparkEstimator(clf.cls, len(feats), classes, head),
            positive_class=classes[1] if len(classes) == 2 else None, threshold=threshold,
            capabilities=(SourceCapability(CAPABILITY, self.pipe),),
        )

    # -- transformers ------------------------------------------------------------------------
    def _StringIndexerModel(self, s: _Stage, label_col: str) -> None:
        where = f"stage {s.position} ({s.cls})"
        data = s.data()[0]
        labels_array = data.get("labelsArray") or [data.get("labels")]
        ins, outs = s.cols("inputCol", "inputCols"), s.cols("outputCol", "outputCols")
        handle = s.params.get("handleInvalid", "error")
        if handle not in ("keep", "error", "skip"):
            raise UnsupportedStepError(s.cls, f"stage {s.position}", f"handleInvalid={handle!r} is not supported")
        for name, out, labels in zip(ins, outs, labels_array):
            if out == label_col:  # the label indexer: its labels are the classes, in index order
                self.label_classes = tuple(labels)
                continue
            i = self._field(name, where)
            self.cats[i] = (tuple(labels), handle == "keep", handle)
            self.values[out] = _Index(i, len(labels), handle == "keep")

    def _OneHotEncoderModel(self, s: _Stage, label_col: str) -> None:
        where = f"stage {s.position} ({s.cls})"
        sizes = s.data()[0]["categorySizes"]
        drop_last = bool(s.params.get("dropLast", True))
        for name, out, size in zip(s.cols("inputCol", "inputCols"), s.cols("outputCol", "outputCols"), sizes):
            idx = self.values.get(name)
            if not isinstance(idx, _Index):
                raise UnsupportedStepError(s.cls, f"stage {s.position}", f"input {name!r} is not a StringIndexer output")
            expected = idx.n_labels + (1 if idx.keep else 0)
            if size != expected:
                raise CompileError(f"{where}: {name!r} has {size} categories, its StringIndexer {expected}; fit them together")
            n_out = size - 1 if drop_last else size
            self.values[out] = [_Col(Column(idx.field, "onehot", k if k < idx.n_labels else -1), n_categories=2) for k in range(n_out)]

    def _ImputerModel(self, s: _Stage, label_col: str) -> None:
        where = f"stage {s.position} ({s.cls})"
        missing = s.params.get("missingValue", "NaN")
        if not (isinstance(missing, str) and missing.lower() == "nan") and not (isinstance(missing, float) and math.isnan(missing)):
            raise UnsupportedStepError(s.cls, f"stage {s.position}", f"missingValue={missing!r}: only NaN (and null) are missing in edgefleet's encoding")
        surrogates = s.data()[0]
        for name, out in zip(s.cols("inputCol", "inputCols"), s.cols("outputCol", "outputCols")):
            if name in self.values:
                raise UnsupportedStepError(s.cls, f"stage {s.position}", f"input {name!r} is computed by an earlier stage; impute raw numeric fields")
            i = self._field(name, where)
            if i in self.cats:
                raise UnsupportedStepError(s.cls, f"stage {s.position}", f"input {name!r} is a string field")
            self.imputed.add(i)
            self.values[out] = _Col(Column(i, "value"), [("fillnan", float(surrogates[name]))])

    def _VectorAssembler(self, s: _Stage, label_col: str) -> None:
        where = f"stage {s.position} ({s.cls})"
        handle = s.params.get("handleInvalid", "error")
        if handle == "keep":
            raise UnsupportedStepError(s.cls, f"stage {s.position}", "handleInvalid='keep' passes NaN to the model; use an Imputer (or 'error')")
        out: list[_Col] = []
        for name in s.params["inputCols"]:
            v = self._input(name, where)
            if isinstance(v, list):
                out.extend(_Col(c.column, list(c.ops), c.n_categories) for c in v)
            elif isinstance(v, _Index):  # a category index fed straight in: ordinal, the unseen bucket = n_labels
                out.append(_Col(Column(v.field, "ordinal", unknown_value=float(v.n_labels)), n_categories=v.n_labels + (1 if v.keep else 0)))
            else:
                out.append(_Col(v.column, list(v.ops)))
        self.values[s.params["outputCol"]] = out

    def _vector_in(self, s: _Stage) -> list[_Col]:
        v = self.values.get(str(s.params.get("inputCol")))
        if not isinstance(v, list):
            raise UnsupportedStepError(s.cls, f"stage {s.position}", f"input {s.params.get('inputCol')!r} is not a vector built by the pipeline")
        return [_Col(c.column, list(c.ops), None) for c in v]  # a scaler's output carries no categorical attributes

    def _StandardScalerModel(self, s: _Stage, label_col: str) -> None:
        cols = self._vector_in(s)
        row = s.data()[0]
        std, mean = _vector(row["std"]), _vector(row["mean"])
        with_mean, with_std = bool(s.params.get("withMean", False)), bool(s.params.get("withStd", True))
        for j, c in enumerate(cols):
            if with_mean:
                c.ops.append(("sub", float(mean[j])))
            if with_std:
                c.ops.append(("mul", 1.0 / float(std[j]) if std[j] != 0.0 else 0.0))
        self.values[s.params["outputCol"]] = cols

    def _MinMaxScalerModel(self, s: _Stage, label_col: str) -> None:
        cols = self._vector_in(s)
        row = s.data()[0]
        omin, omax = _vector(row["originalMin"]), _vector(row["originalMax"])
        lo, hi = float(s.params.get("min", 0.0)), float(s.params.get("max", 1.0))
        scale, constant = hi - lo, (lo + hi) / 2
        for j, c in enumerate(cols):
            rng = float(omax[j]) - float(omin[j])
            if rng != 0.0:
                c.ops += [("sub", float(omin[j])), ("mul", scale / rng), ("add", lo)]
            else:
                c.ops += [("mul", 0.0), ("add", constant)]
        self.values[s.params["outputCol"]] = cols

    # -- the classifier ----------------------------------------------------------------------
    def _head(self, clf: _Stage, feats: list[_Col], where: str) -> tuple[Any, tuple[Any, ...], float]:
        from compiler.lowering import Linear

        threshold = float(clf.params.get("threshold", 0.5))
        if clf.params.get("thresholds"):
            raise UnsupportedStepError(clf.cls, f"stage {clf.position}", "per-class 'thresholds' are not supported; use 'threshold'")
        if clf.cls == "LogisticRegressionModel":
            lr = self.pipe.model.stages[clf.position]
            coef = np.asarray(lr.coefficientMatrix.toArray(), dtype=np.float64)
            icpt = np.asarray(lr.interceptVector.toArray(), dtype=np.float64)
            n_classes = int(lr.numClasses)
            head: Any = Linear("expit" if coef.shape[0] == 1 else "softmax", coef, icpt)
        else:
            head, n_classes = self._forest(clf, feats, where)
        if isinstance(head, Linear) and head.coef.shape[1] != len(feats):
            raise CompileError(f"{where}: {head.coef.shape[1]} coefficients for {len(feats)} assembled features")
        classes: tuple[Any, ...] = self.label_classes or tuple(range(n_classes))
        if len(classes) != n_classes:
            raise CompileError(f"{where}: {n_classes} classes, but the label indexer has {len(classes)} labels")
        return head, classes, threshold

    def _forest(self, clf: _Stage, feats: list[_Col], where: str) -> tuple[Any, int]:
        from compiler.lowering import trees

        if clf.cls == "DecisionTreeClassificationModel":
            groups = {0: clf.data()}
            weights = {0: 1.0}
        else:
            groups = {}
            for r in clf.data():
                groups.setdefault(int(r["treeID"]), []).append(r["nodeData"])
            weights = {int(r["_1"]): float(r["_3"]) for r in clf.data("treesMetadata")}
        n_classes = int(clf.params.get("numClasses") or 0) or (2 if clf.cls == "GBTClassificationModel" else 0)
        gbt = clf.cls == "GBTClassificationModel"
        tables = []
        for t in sorted(groups):
            nodes = sorted(groups[t], key=lambda n: int(n["id"]))
            if not n_classes and not gbt:
                n_classes = len(nodes[0]["impurityStats"])
            tables.append(self._tree(nodes, feats, where, n_classes, gbt, weights.get(t, 1.0), len(groups)))
        if gbt:
            return trees.flatten(clf.cls, tables, (0.0,), "expit", _layers(feats), len(feats), float32=False), 2
        return trees.flatten(clf.cls, tables, (0.0,) * n_classes, "proba", _layers(feats), len(feats), float32=False), n_classes

    def _tree(self, nodes: list[dict[str, Any]], feats: list[_Col], where: str, n_classes: int, gbt: bool,
              weight: float, n_trees: int) -> Any:
        n = len(nodes)
        if [int(x["id"]) for x in nodes] != list(range(n)):
            raise CompileError(f"{where}: tree node ids are not 0..{n - 1}")
        feature = np.zeros(n, np.int64)
        threshold = np.zeros(n, np.float64)
        left = np.full(n, -1, np.int64)
        right = np.full(n, -1, np.int64)
        leaf = np.zeros(n, bool)
        value = np.zeros((n, 1 if gbt else n_classes))
        for k, nd in enumerate(nodes):
            if int(nd["leftChild"]) < 0:
                leaf[k] = True
                if gbt:
                    value[k, 0] = 2.0 * weight * float(nd["prediction"])  # Spark: p1 = 1 / (1 + exp(-2 * sum(w * pred)))
                else:
                    stats = np.asarray(nd["impurityStats"], dtype=np.float64)
                    total = stats.sum()
                    value[k] = (stats / total if total != 0 else stats * 0.0) / n_trees
                continue
            split = nd["split"]
            j = int(split["featureIndex"])
            lc, rc = int(nd["leftChild"]), int(nd["rightChild"])
            feature[k] = j
            n_cat = int(split["numCategories"])
            vals = list(split["leftCategoriesOrThreshold"])
            if n_cat < 0:  # continuous: x <= t goes left, in double
                threshold[k], left[k], right[k] = float(vals[0]), lc, rc
                continue
            col = feats[j]
            if col.ops:
                raise CompileError(f"{where}: a categorical split on feature {j}, which a scaler changed; Spark's category codes are gone there")
            t, swap = _categorical_cut(sorted(float(v) for v in vals), n_cat)
            if t is None:
                raise CompileError(f"{where}: a split on categorical feature {j} sends categories {vals} of {n_cat} left, "
                                   "which no threshold can express; one-hot encode that field (OneHotEncoder) first")
            threshold[k] = t
            left[k], right[k] = (rc, lc) if swap else (lc, rc)
        return feature, threshold, left, right, leaf, value


def _categorical_cut(left_set: list[float], n_cat: int) -> tuple[float | None, bool]:
    """(threshold, swap) with ``x in left_set`` == (``x <= threshold`` xor swap) for codes 0..n_cat-1."""
    codes = [int(v) for v in left_set]
    if any(float(c) != v for c, v in zip(codes, left_set)):
        return None, False
    if codes == list(range(len(codes))):  # a prefix {0..m} (empty: nothing goes left)
        return len(codes) - 0.5, False
    if codes == list(range(n_cat - len(codes), n_cat)):  # a suffix {m..k-1}: x <= m - 0.5 goes right
        return n_cat - len(codes) - 0.5, True
    return None, False


def _layers(cols: list[_Col]) -> tuple[Layer, ...]:
    """Per-column op chains as IR layers: the k-th op of every column, one layer per op kind."""
    identity = {"fillnan": math.nan, "sub": 0.0, "add": 0.0, "mul": 1.0, "div": 1.0}
    out: list[Layer] = []
    depth = max((len(c.ops) for c in cols), default=0)
    for k in range(depth):
        for op in ("fillnan", "sub", "mul", "add", "div"):
            if not any(len(c.ops) > k and c.ops[k][0] == op for c in cols):
                continue
            vals = tuple(c.ops[k][1] if len(c.ops) > k and c.ops[k][0] == op else identity[op] for c in cols)
            out.append(Layer(op, vals))
    return tuple(out)


def _pyspark_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pyspark")
    except metadata.PackageNotFoundError:
        return "unknown"


def _fields(lw: _Lowering) -> tuple[Field, ...]:
    """The input fields in first-use order: categories and policies, numeric ranges from the sample."""
    out = []
    for i, name in enumerate(lw.names):
        if i in lw.cats:
            labels, keep, _handle = lw.cats[i]
            out.append(Field(name, "categorical", labels, missing="unseen" if keep else "reject", unseen="ignore" if keep else "reject"))
            continue
        s = lw.sample[name]
        if s.dtype.kind not in "biuf":
            from compiler.frontends._sample import not_a_number

            problem = not_a_number(lw.sample, name)
            raise CompileError(problem or f"column {name!r} holds {s.dtype} values but reaches the model unencoded; it must be numeric")
        vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = vals[np.isfinite(vals)]
        imputed_only = i in lw.imputed and i not in lw.raw_uses
        out.append(Field(name, "boolean" if s.dtype.kind == "b" else "numeric",
                         min=float(finite.min()) if finite.size else None, max=float(finite.max()) if finite.size else None,
                         missing="impute" if imputed_only else "reject"))
    return tuple(out)

