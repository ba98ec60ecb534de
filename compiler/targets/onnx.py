"""The ``onnx`` target: one name, one runtime (onnxruntime), a builder per IR node type.

    SklearnEstimator -> compiler.targets.onnx_sklearn (double preprocessing graph + skl2onnx)
    KerasGraph       -> compiler.targets.onnx_keras   (frozen tf.function + tf2onnx)
    SparkEstimator   -> compiler.lowering.onnxgraph   (the lowered program as plain float64 ops)

Both artifacts keep one contract: float64 ``features`` [N, F] in, ``label`` int64 [N] and
``probabilities`` [N, n_classes] out, so scoring is shared. Any other node is refused by name
(``compiler.targets.NodeTarget``). ``check_available`` covers what every ONNX compile needs
(onnx, onnxruntime, skl2onnx); tf2onnx is checked only once the IR is known to be Keras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import CompileError, TargetUnavailableError
from compiler.targets import Artifact, NodeTarget, onnx_keras, onnx_sklearn
from compiler.targets.onnx_sklearn import INPUT, ML_OPSET, OPSET

if TYPE_CHECKING:
    import pandas as pd

    from compiler.ir import ModelIR

__all__ = ["INPUT", "ML_OPSET", "OPSET", "OnnxTarget"]


class OnnxTarget(NodeTarget):
    name = "onnx"
    runtime = "onnxruntime"

    def check_available(self) -> None:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import skl2onnx  # noqa: F401
        except ImportError as exc:
            raise TargetUnavailableError(
                f"the onnx target needs onnx, skl2onnx and onnxruntime ({exc}); install with: pip install 'edgefleet[compiler]'"
            ) from exc

    def runtime_version(self) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    # -- per node type -----------------------------------------------------------------------
    def build_sklearn_estimator(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        return onnx_sklearn.build(ir, meta, self.runtime)

    def available_keras_graph(self, ir: "ModelIR") -> None:
        onnx_keras.check_available()

    def build_keras_graph(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        from compiler.ir import KerasGraph

        assert isinstance(ir.estimator, KerasGraph)  # dispatch chose this handler by node type
        return onnx_keras.build(ir, ir.estimator, self.runtime)

    def unsupported_spark_estimator(self, ir: "ModelIR") -> str | None:
        from compiler.lowering import unsupported_reason

        return unsupported_reason(ir)

    def build_spark_estimator(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        import onnx

        from compiler.lowering import lower, onnxgraph

        model = onnxgraph.build(lower(ir, "onnx"), str(meta.get("name", "model")))
        model.doc_string = f"edgefleet bundle {meta.get('name')} v{meta.get('version')}: input '{INPUT}' is float64 encoded per the manifest's input_schema"
        for key in ("name", "version"):
            entry = model.metadata_props.add()
            entry.key, entry.value = f"edgefleet.{key}", str(meta.get(key, ""))
        model.producer_version = str(meta.get("edgefleet_version", ""))
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:  # onnx raises several unrelated types here
            raise CompileError(f"onnx target: the emitted graph does not pass onnx.checker: {exc}") from exc
        return Artifact(
            format="onnx", filename="model.onnx", data=model.SerializeToString(), runtime=self.runtime,
            runtime_min_version=onnx_sklearn.RUNTIME_MIN_VERSION, input_kind="tensor",
            inputs=[{"name": INPUT, "dtype": "float64", "shape": [None, len(ir.fields)]}],
            outputs=[{"name": "label", "dtype": "int64"}, {"name": "probabilities", "dtype": "float64"}],
            notes=["Spark ML model: decisions in double, as Spark makes them (no float32 cast)"],
        )

    # -- score -------------------------------------------------------------------------------
    def score(self, artifact: Artifact, ir: "ModelIR", features: np.ndarray, frame: "pd.DataFrame") -> np.ndarray:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            sess = ort.InferenceSession(artifact.data, opts, providers=["CPUExecutionProvider"])
            _label, proba = sess.run(["label", "probabilities"], {INPUT: features})
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise CompileError(f"onnx target: onnxruntime could not score the artifact: {exc}") from exc
        return np.asarray(proba, dtype=np.float64)
