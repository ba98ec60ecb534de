"""Scoring backends: one per real runtime. Each loads one artifact and returns probabilities.

A backend is chosen from what the manifest offers and what is importable here, in order of
preference: onnxruntime, ai-edge-litert (TFLite), pypmml. ``available_backends()`` is also
what a device reports as its capabilities.

Two more backends run only when asked for by name (``prefer=``, ``edgefleet score --backend``),
never by preference, and are never reported as a device capability:

* ``pickle`` (``PickleBackend``): the fitted scikit-learn pipeline. Unpickling runs code, so it
  takes only a ``VerifiedManifest`` (signature checked), checks the artifact's sha256 against
  the signed entry again, and refuses unless this side's scikit-learn version equals the
  manifest's ``requires["scikit-learn"]`` and its Python major.minor equals
  ``requires["python"]``'s, naming both versions. Only then does ``joblib`` load it.
* ``spark`` (``SparkBackend``): the packed ``PipelineModel`` directory, loaded into the active
  (or a new local) SparkSession; pyspark is imported only when this backend is built.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import platform
from typing import Any, Mapping, Sequence

import numpy as np

from edgefleet.errors import BundleError
from runtimes.python.errors import BackendUnavailableError


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, bounded: runtime errors can span many lines."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

# backend name -> (artifact format, python module that must be importable)
BACKENDS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "onnxruntime"),
    "tflite": ("tflite", "ai_edge_litert"),
    "pmml": ("pmml", "pypmml"),
    "pickle": ("pickle", "joblib"),
    "spark": ("spark", "pyspark"),
}
PREFERENCE = ("onnx", "tflite", "pmml")  # chosen automatically, in this order; pickle and spark only by name


def available_backends() -> list[str]:
    return [b for b in PREFERENCE if importlib.util.find_spec(BACKENDS[b][1]) is not None]


class OnnxBackend:
    name = "onnx"
    input_kind = "tensor"

    def __init__(self, data: bytes, entry: Mapping[str, Any], threads: int = 1) -> None:
        import onnxruntime as ort  # no stubs, no py.typed: ignore_missing_imports

        opts = ort.SessionOptions()
        # ORT's default pool collapses under CPU contention (73 ms -> 288 ms measured); one
        # thread is steadier on a shared gateway and fastest for single rows.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        self.input_name = entry["inputs"][0]["name"]
        self.output_names = ["probabilities"]
        self.runtime_version = ort.__version__
        # The C session, without InferenceSession.run's per-call Python checks of feed names
        # and ownership: our one input is always a float64 ndarray built by the encoder.
        self._run = getattr(self.session, "_sess", self.session).run

    def predict(self, features: np.ndarray, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out: np.ndarray = self._run(self.output_names, {self.input_name: features}, None)[0]
        return out


class TfliteBackend:
    name = "tflite"
    input_kind = "tensor"

    def __init__(self, data: bytes, entry: Mapping[str, Any], threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=data, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        outs = self.interpreter.get_output_details()
        self.out = next((o for o in outs if "prob" in o["name"]), outs[-1])
        self.dtype = np.dtype(self.inp["dtype"])
        self.runtime_version = "ai-edge-litert"
        self.quantization = entry.get("quantization")  # a quantized artifact's own tolerance (canary replay)

    def predict(self, features: np.ndarray, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        x = features.astype(self.dtype, copy=False)
        if tuple(self.inp["shape"]) != x.shape:
            self.interpreter.resize_tensor_input(self.inp["index"], x.shape)
            self.interpreter.allocate_tensors()
            self.inp = self.interpreter.get_input_details()[0]
        self.interpreter.set_tensor(self.inp["index"], x)
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_tensor(self.out["index"]), dtype=np.float64)


class PmmlBackend:
    name = "pmml"
    input_kind = "fields"

    def __init__(self, data: bytes, entry: Mapping[str, Any], classes: Sequence[Any]) -> None:
        import json
        import os
        import tempfile

        from pypmml import Model

        with tempfile.NamedTemporaryFile(suffix=".pmml", delete=False) as fh:
            fh.write(data)
        try:
            self.model = Model.fromFile(fh.name)
        finally:
            os.unlink(fh.name)
        self._json = json
        self.inputs = list(self.model.inputNames)
        self.prob_cols = [f"probability({c})" for c in classes]
        self.runtime_version = "pypmml"

    def predict(self, features: np.ndarray, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        def clean(v: Any) -> Any:
            return None if v is None or (isinstance(v, float) and v != v) else v

        payload = {"columns": self.inputs, "data": [[clean(r.get(c)) for c in self.inputs] for r in records]}
        res = self._json.loads(self.model.call("predict", self._json.dumps(payload)))
        idx = [res["columns"].index(c) for c in self.prob_cols]
        return np.array([[float("nan") if row[j] is None else float(row[j]) for j in idx] for row in res["data"]])


def _check_signed_bytes(data: bytes, entry: Mapping[str, Any], manifest: Mapping[str, Any], fmt: str) -> None:
    """Refuse an artifact that does not come from a verified manifest or whose bytes differ from the signed hash."""
    from edgefleet.manifest import VerifiedManifest

    if not isinstance(manifest, VerifiedManifest):
        raise BundleError(f"the {fmt} artifact is loaded only from a verified bundle (got an unverified {type(manifest).__name__})")
    got = hashlib.sha256(data).hexdigest()
    if got != entry.get("sha256"):
        raise BundleError(f"bundle {manifest['name']} v{manifest['version']}: {entry.get('path')} has sha256 {got}, "
                          f"the signed manifest says {entry.get('sha256')}; refused before loading")


def _python_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


class PickleBackend:
    """The fitted scikit-learn pipeline (see the module docstring for what is checked before unpickling)."""

    name = "pickle"
    input_kind = "fields"

    def __init__(self, data: bytes, entry: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        _check_signed_bytes(data, entry, manifest, "pickle")
        import sklearn

        req = entry.get("requires") or {}
        want_sk, want_py = req.get("scikit-learn"), req.get("python")
        have_sk, have_py = str(sklearn.__version__), platform.python_version()
        where = f"bundle {manifest['name']} v{manifest['version']}"
        if not want_sk or not want_py:
            raise BackendUnavailableError(f"{where}: its pickle artifact names no scikit-learn/python versions (artifacts[].requires); refused")
        if want_sk != have_sk:
            raise BackendUnavailableError(f"{where}: its pickle artifact was written by scikit-learn {want_sk}, this side has "
                                          f"scikit-learn {have_sk}; refused (a pickle loads only with the exact version)")
        if _python_minor(want_py) != _python_minor(have_py):
            raise BackendUnavailableError(f"{where}: its pickle artifact was written on Python {want_py}, this side runs "
                                          f"Python {have_py}; refused (a pickle loads only on the same Python major.minor)")
        import joblib

        self.model = joblib.load(io.BytesIO(data))
        self.fields = list(manifest["input_schema"]["fields"])
        names = getattr(self.model, "feature_names_in_", None)
        self.columns = [str(n) for n in names] if names is not None else [f["name"] for f in self.fields]
        self.runtime_version = f"scikit-learn {have_sk}"

    def predict(self, features: np.ndarray, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame.from_records([dict(r) for r in records], columns=self.columns)
        for f in self.fields:
            if f["name"] not in frame:
                continue
            if f["type"] == "numeric":
                frame[f["name"]] = pd.to_numeric(frame[f["name"]], errors="coerce")
            elif f["type"] == "categorical":
                frame[f["name"]] = frame[f["name"]].astype(object).where(frame[f["name"]].notna(), np.nan)
        return np.asarray(self.model.predict_proba(frame), dtype=np.float64)


class SparkBackend:
    """The packed Spark ``PipelineModel`` (``compiler.targets.spark``), scored by Spark itself."""

    name = "spark"
    input_kind = "fields"

    def __init__(self, data: bytes, entry: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        _check_signed_bytes(data, entry, manifest, "spark")
        import pyspark

        want = (entry.get("requires") or {}).get("pyspark")
        have = str(pyspark.__version__)
        if want and _python_minor(want) != _python_minor(have):
            raise BackendUnavailableError(f"bundle {manifest['name']} v{manifest['version']}: its spark artifact was saved by "
                                          f"pyspark {want}, this side has pyspark {have}; refused")
        import tarfile
        import tempfile

        from pyspark.ml import PipelineModel
        from pyspark.sql import SparkSession

        self.fields = list(manifest["input_schema"]["fields"])
        self._tmp = tempfile.TemporaryDirectory(prefix="edgefleet-spark-")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(self._tmp.name, filter="data")  # no absolute paths, links out or devices
        self.spark = SparkSession.getActiveSession() or (  # a local one on loopback only, UI off
            SparkSession.builder.master("local[1]").appName("edgefleet-score").config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
        self.model = PipelineModel.load(self._tmp.name + "/model")
        self.runtime_version = f"pyspark {have}"

    def predict(self, features: np.ndarray, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        from pyspark.sql import types as T

        kinds = {"numeric": T.DoubleType(), "boolean": T.BooleanType(), "categorical": T.StringType()}
        schema = T.StructType([T.StructField(f["name"], kinds[f["type"]], True) for f in self.fields])

        def cell(f: Mapping[str, Any], v: Any) -> Any:
            if v is None or (isinstance(v, float) and v != v):
                return None
            return float(v) if f["type"] == "numeric" else (bool(v) if f["type"] == "boolean" else str(v))

        rows = [(i, *(cell(f, r.get(f["name"])) for f in self.fields)) for i, r in enumerate(records)]
        schema = T.StructType([T.StructField("_edgefleet_row", T.LongType(), False), *schema.fields])
        out = self.model.transform(self.spark.createDataFrame(rows, schema)).select("_edgefleet_row", "probability").collect()
        proba = np.full((len(records), 0), np.nan)
        got = {int(r[0]): r[1].toArray() for r in out}
        if got:
            width = len(next(iter(got.values())))
            proba = np.full((len(records), width), np.nan)  # a row Spark dropped (handleInvalid=skip) stays NaN: refused by the scorer
            for i, v in got.items():
                proba[i] = v
        result: np.ndarray = proba
        return result


def load_backend(manifest: Mapping[str, Any], files: Mapping[str, bytes], prefer: str | None = None) -> Any:
    """Load the preferred (or first runnable) artifact of a verified manifest."""
    offered = {a["format"]: a for a in manifest["artifacts"] if a["path"] in files}  # a slim bundle carries some
    installed = available_backends()
    order = [prefer] if prefer else list(PREFERENCE)
    for name in order:
        if name not in BACKENDS:
            raise BackendUnavailableError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
        fmt, module = BACKENDS[name]
        if fmt not in offered:
            if prefer:
                raise BackendUnavailableError(f"bundle {manifest['name']} v{manifest['version']} has no {fmt} artifact (it has: {', '.join(offered)})")
            continue
        if name not in installed and importlib.util.find_spec(module) is None:
            if prefer:
                raise BackendUnavailableError(f"backend {name} needs the Python package {module}, which is not installed")
            continue
        entry = offered[fmt]
        data = files[entry["path"]]
        try:
            if name == "onnx":
                return OnnxBackend(data, entry)
            if name == "tflite":
                return TfliteBackend(data, entry)
            if name == "pickle":
                return PickleBackend(data, entry, manifest)
            if name == "spark":
                return SparkBackend(data, entry, manifest)
            return PmmlBackend(data, entry, manifest["output"]["classes"])
        except (BackendUnavailableError, BundleError):
            raise
        except Exception as exc:  # noqa: BLE001 - each runtime raises its own types; a signed but broken artifact is a bundle defect
            raise BundleError(
                f"bundle {manifest['name']} v{manifest['version']}: its {fmt} artifact does not load in {module}: {one_line(exc)}"
            ) from exc
    raise BackendUnavailableError(
        f"bundle {manifest['name']} v{manifest['version']} offers {', '.join(offered)}, "
        f"but this device can run only: {', '.join(installed) or 'nothing (install onnxruntime)'}"
    )
