"""ONNX for Keras models: freeze a float64-input ``tf.function`` and convert it with tf2onnx.

``tf2onnx.convert.from_keras`` fails on Keras 3 (``KeyError: 'keras_tensor_N'``, measured with
keras 3.15.1 / tf2onnx 1.17.0), and ``from_function`` on an unfrozen function leaves the
``Normalization`` constants as required graph inputs (issue 3). Freezing the function with
``convert_variables_to_constants_v2`` first and converting the GraphDef gives a graph whose only
input is ``features``. The graph has the ONNX target's contract: float64 ``features`` [N, F]
in, ``label`` int64 [N] and ``probabilities`` [N, n_classes] out (float32, the model's dtype).

``KerasAwareOnnxTarget`` is the ONNX target plus this path; registering it under ``onnx``
instead of ``OnnxTarget`` lets one ``--targets onnx`` serve both frameworks.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from compiler.errors import CompileError
from compiler.targets import Artifact
from compiler.targets.onnx import OPSET, OnnxTarget

if TYPE_CHECKING:
    from compiler.ir import ModelIR


def keras_onnx(model: Any, n_fields: int) -> bytes:
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    @tf.function(input_signature=[tf.TensorSpec([None, n_fields], tf.float64, name="features")])
    def run(features: Any) -> dict[str, Any]:
        out = model(tf.cast(features, tf.float32), training=False)
        proba = tf.concat([1.0 - out, out], axis=1) if out.shape[-1] == 1 else out
        return {"label": tf.argmax(proba, axis=1), "probabilities": proba}

    tf.get_logger().setLevel("ERROR")  # tf2onnx calls TF1 APIs that log deprecation warnings
    try:
        frozen = convert_variables_to_constants_v2(run.get_concrete_function())
        outs = {t.name: None for t in frozen.outputs}
        model_proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs], output_names=list(outs), opset=OPSET,
        )
    except Exception as exc:  # tf2onnx raises ValueError/KeyError/RuntimeError
        raise CompileError(f"onnx target: tf2onnx could not convert the Keras model: {type(exc).__name__}: {exc}") from exc
    # name inputs/outputs as the contract says; structured outputs come back in key order
    g = model_proto.graph
    renames = {g.input[0].name: "features", g.output[0].name: "label", g.output[1].name: "probabilities"}
    for node in g.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for vi in list(g.input) + list(g.output):
        vi.name = renames.get(vi.name, vi.name)
    return bytes(model_proto.SerializeToString())


class KerasAwareOnnxTarget(OnnxTarget):
    def check_available(self) -> None:
        super().check_available()

    def build(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        if ir.framework != "keras":
            return super().build(ir, meta)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            import tf2onnx  # noqa: F401
        except ImportError as exc:
            raise CompileError(f"onnx target: a Keras model needs tf2onnx ({exc}); pip install 'edgefleet[tf]'") from exc
        n = len(ir.fields)
        return Artifact(
            format="onnx",
            filename="model.onnx",
            data=keras_onnx(ir.estimator.obj.model, n),
            runtime=self.runtime,
            runtime_min_version="1.16",
            input_kind="tensor",
            inputs=[{"name": "features", "dtype": "float64", "shape": [None, n]}],
            outputs=[{"name": "label", "dtype": "int64"}, {"name": "probabilities", "dtype": "float32"}],
        )
