"""Scoring backends: one per real runtime. Each loads one artifact and returns probabilities.

A backend is chosen from what the manifest offers and what is importable here, in order of
preference: onnxruntime, ai-edge-litert (TFLite), pypmml. ``available_backends()`` is also
what a device reports as its capabilities.
"""

from __future__ import annotations

import importlib.util
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
}
PREFERENCE = ("onnx", "tflite", "pmml")


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


def load_backend(manifest: Mapping[str, Any], files: Mapping[str, bytes], prefer: str | None = None) -> Any:
    """Load the preferred (or first runnable) artifact of a verified manifest."""
    offered = {a["format"]: a for a in manifest["artifacts"] if a["path"] in files}  # a slim bundle carries some
    installed = available_backends()
    order = [prefer] if prefer else list(PREFERENCE)
    for name in order:
        if name not in BACKENDS:
            raise BackendUnavailableError(f"unknown backend {name!r}; known: {', '.join(PREFERENCE)}")
        fmt, module = BACKENDS[name]
        if fmt not in offered:
            if prefer:
                raise BackendUnavailableError(f"bundle {manifest['name']} v{manifest['version']} has no {fmt} artifact (it has: {', '.join(offered)})")
            continue
        if name not in installed:
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
            return PmmlBackend(data, entry, manifest["output"]["classes"])
        except Exception as exc:  # noqa: BLE001 - each runtime raises its own types; a signed but broken artifact is a bundle defect
            raise BundleError(
                f"bundle {manifest['name']} v{manifest['version']}: its {fmt} artifact does not load in {module}: {one_line(exc)}"
            ) from exc
    raise BackendUnavailableError(
        f"bundle {manifest['name']} v{manifest['version']} offers {', '.join(offered)}, "
        f"but this device can run only: {', '.join(installed) or 'nothing (install onnxruntime)'}"
    )
