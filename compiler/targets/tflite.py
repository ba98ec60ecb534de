"""TFLite target: scikit-learn models through our own lowering, Keras models through TF's converter.

* scikit-learn: ``compiler.lowering`` turns the IR into a tensor program (exact int64 tree
  decisions, float32 arithmetic elsewhere) and ``compiler.lowering.tfgraph`` emits it as a
  ``tf.function``; ``TFLiteConverter.from_concrete_functions`` converts that plain function
  (no Keras object is involved, so the Keras 3 caveat below does not apply). Builtin ops only:
  no Flex delegate is needed on a device. Input: float64 ``features`` [N, F], the manifest's
  tensor contract unchanged (TFLite can Cast and Bitcast float64).
* Keras: ``model.export()`` to a SavedModel, then ``from_saved_model``.
  ``from_concrete_functions`` on a Keras 3 model converted without error but scored NaN or
  garbage (issue 3). Input: float32 ``features`` [N, F] (the model's own dtype; Keras casts
  float64 input to float32 anyway, so nothing is lost).

Output: ``probabilities`` float32 [N, n_classes] in the manifest's class order. Parity is
scored with ai-edge-litert's ``Interpreter``, the TFLite runtime a device installs.

Quantization (``compile(..., quantize=...)``, ``edgefleet compile --quantize``), for Keras,
LogisticRegression and MLPClassifier:

* ``float16``: every float32 constant stored as float16 (``supported_types=[tf.float16]``);
  the runtime dequantizes once at load, arithmetic stays float32.
* ``int8``: TFLite dynamic-range quantization: weight tensors with at least 1,024 elements
  become int8 (per channel) and those matmuls run int8 with activations quantized per row.
  Smaller weights stay float32, so a small model may come out unchanged (a note says so).

Tree ensembles refuse both: their decisions are exact int64 key comparisons that
quantization cannot shrink, and it would only round the leaf values (measured on
HistGradientBoosting: 7% smaller). ``compiler._compile`` builds the unquantized artifact
too and records the deltas against it.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import CompileError, TargetUnavailableError
from compiler.ir import KerasGraph, SklearnEstimator
from compiler.targets import Artifact, NodeTarget

if TYPE_CHECKING:
    import pandas as pd

    from compiler.ir import ModelIR

INSTALL_HINT = "pip install 'edgefleet[tf]' (tensorflow-cpu, ai-edge-litert)"
OUTPUT = "probabilities"
QUANTIZATIONS = ("float16", "int8")


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class TfliteTarget(NodeTarget):
    name = "tflite"
    runtime = "ai-edge-litert"
    quantizations = QUANTIZATIONS

    def check_available(self) -> None:
        _quiet_tf()
        try:
            import ai_edge_litert.interpreter  # noqa: F401
            import tensorflow  # noqa: F401
        except ImportError as exc:
            raise TargetUnavailableError(f"the tflite target needs tensorflow and ai-edge-litert ({exc}); {INSTALL_HINT}") from exc

    def unsupported_sklearn_estimator(self, ir: "ModelIR") -> str | None:
        from compiler.lowering import unsupported_reason

        return unsupported_reason(ir)

    unsupported_spark_estimator = unsupported_sklearn_estimator  # the same tensor lowering (compiler.ir.SparkEstimator)

    def quantize_unsupported_reason(self, ir: "ModelIR", mode: str) -> str | None:
        if mode not in QUANTIZATIONS:
            return f"unknown quantization {mode!r}; use {' or '.join(QUANTIZATIONS)}"
        node = ir.estimator
        if isinstance(node, KerasGraph) or (isinstance(node, SklearnEstimator) and node.family in ("LogisticRegression", "MLPClassifier")):
            return None
        if not isinstance(node, SklearnEstimator):
            return f"no quantized emitter for IR node {type(node).__name__}"
        return (f"{ir.estimator.family} is a tree ensemble: its decisions are exact int64 comparisons that "
                "quantization cannot shrink; only the leaf values would be rounded")

    def runtime_version(self) -> str:
        from importlib import metadata

        return metadata.version("ai-edge-litert")

    def build_sklearn_estimator(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        _quiet_tf()
        return self._artifact(ir, sklearn_tflite(ir, quantize=meta.get("quantize")), "float64", meta.get("quantize"))

    def build_spark_estimator(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        if meta.get("quantize"):
            raise CompileError(f"{self.name} target: Spark models are not quantized")
        return self.build_sklearn_estimator(ir, meta)

    def build_keras_graph(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        _quiet_tf()
        assert isinstance(ir.estimator, KerasGraph)  # dispatch chose this handler by node type
        return self._artifact(ir, keras_tflite(ir.estimator, quantize=meta.get("quantize")), "float32", meta.get("quantize"))

    def _artifact(self, ir: "ModelIR", data: bytes, dtype: str, quantize: str | None) -> Artifact:
        notes = [] if dtype == "float64" else ["input is float32: the Keras model's own dtype"]
        if quantize:
            n_q = quantized_tensors(data)
            notes.append(f"{quantize} quantization: {n_q} quantized constant tensor(s)"
                         + ("; no weight tensor reached TFLite's 1,024-element minimum, so the arithmetic is unchanged float32" if n_q == 0 else ""))
        n = len(ir.fields)
        return Artifact(
            format="tflite",
            filename="model.tflite",
            data=data,
            runtime=self.runtime,
            runtime_min_version="2.3",
            input_kind="tensor",
            inputs=[{"name": "features", "dtype": dtype, "shape": [None, n]}],
            outputs=[{"name": OUTPUT, "dtype": "float32", "shape": [None, len(ir.estimator.classes)]}],
            notes=notes,
        )

    def score(self, artifact: Artifact, ir: "ModelIR", features: np.ndarray, frame: "pd.DataFrame") -> np.ndarray:
        dtype = np.float32 if artifact.inputs[0]["dtype"] == "float32" else np.float64
        try:
            out = run_tflite(artifact.data, np.asarray(features, dtype=dtype))
        except Exception as exc:  # the interpreter raises RuntimeError/ValueError with its own text
            raise CompileError(f"tflite target: ai-edge-litert could not score the artifact for {ir.estimator.family}: {exc}") from exc
        return _as_proba(out, len(ir.estimator.classes))


def _as_proba(out: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.asarray(out, dtype=np.float64)
    if out.ndim == 1 or (out.shape[1] == 1 and n_classes == 2):  # a single sigmoid unit
        p = out.reshape(-1)
        return np.stack([1.0 - p, p], axis=1)
    return out


def run_tflite(data: bytes, features: np.ndarray) -> np.ndarray:
    """Score ``features`` with ai-edge-litert; returns the first output."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data, num_threads=1)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], list(features.shape), strict=False)
    it.allocate_tensors()
    it.set_tensor(inp["index"], features.astype(inp["dtype"], copy=False))
    it.invoke()
    return np.array(it.get_tensor(it.get_output_details()[0]["index"]))


def quantized_tensors(data: bytes) -> int:
    """How many constant tensors of a TFLite model are stored as float16 or int8."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=data).get_tensor_details()
    return sum(1 for d in details if np.dtype(d["dtype"]) in (np.float16, np.int8))


def _quantize(conv: Any, quantize: str | None) -> None:
    import tensorflow as tf

    if quantize == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize:
        raise CompileError(f"tflite target: unknown quantization {quantize!r}; use {' or '.join(QUANTIZATIONS)}")


def sklearn_tflite(ir: "ModelIR", quantize: str | None = None) -> bytes:
    import tensorflow as tf

    from compiler.lowering import lower
    from compiler.lowering.tfgraph import tf_function

    fn = tf_function(lower(ir, "tflite"), barrier=quantize == "int8")
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    _quantize(conv, quantize)
    try:
        return bytes(conv.convert())
    except Exception as exc:  # ConverterError and friends
        raise CompileError(f"tflite target: TFLite could not convert the lowered {ir.estimator.family}: {str(exc).splitlines()[-1]}") from exc


def keras_tflite(graph: KerasGraph, quantize: str | None = None) -> bytes:
    """Keras model -> TFLite via its SavedModel export + ``from_saved_model``; optional float16/int8 (dynamic range)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "saved")
        try:
            graph.export_saved_model(path)
            conv = tf.lite.TFLiteConverter.from_saved_model(path)
            _quantize(conv, quantize)
            return bytes(conv.convert())
        except CompileError:
            raise
        except Exception as exc:
            raise CompileError(f"tflite target: TFLite could not convert the Keras model: {type(exc).__name__}: {exc}") from exc
