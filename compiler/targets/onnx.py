"""The ``onnx`` target: one name, one runtime (onnxruntime), a builder per IR node type.

    SklearnEstimator -> compiler.targets.onnx_sklearn (double preprocessing graph + skl2onnx)
    KerasGraph       -> compiler.targets.onnx_keras   (frozen tf.function + tf2onnx)

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
