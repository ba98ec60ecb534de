"""ONNX for Keras models (``KerasGraph`` nodes): freeze a float64-input ``tf.function`` and convert it with tf2onnx.

``tf2onnx.convert.from_keras`` fails on Keras 3 (``KeyError: 'keras_tensor_N'``, measured with
keras 3.15.1 / tf2onnx 1.17.0), and ``from_function`` on an unfrozen function leaves the
``Normalization`` constants as required graph inputs (issue 3). Freezing the function with
``convert_variables_to_constants_v2`` first and converting the GraphDef gives a graph whose only
input is ``features``. The graph has the ONNX target's contract: float64 ``features`` [N, F]
in, ``label`` int64 [N] and ``probabilities`` [N, n_classes] out (float32, the model's dtype).

``compiler.targets.onnx.OnnxTarget`` dispatches ``KerasGraph`` nodes here. tf2onnx is an
optional extra: ``check_available`` raises ``TargetUnavailableError`` when it cannot be
imported (``compile()`` asks right after lowering, before any slow step).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from compiler.errors import CompileError, TargetUnavailableError
from compiler.targets import Artifact
from compiler.targets.onnx_sklearn import OPSET, RUNTIME_MIN_VERSION

if TYPE_CHECKING:
    from compiler.ir import KerasGraph, ModelIR

INSTALL_HINT = "pip install 'edgefleet[tf]'"


def check_available() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise TargetUnavailableError(f"the onnx target needs tensorflow and tf2onnx for a Keras model ({exc}); {INSTALL_HINT}") from exc


def keras_onnx(graph: "KerasGraph", n_fields: int) -> bytes:
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    @tf.function(input_signature=[tf.TensorSpec([None, n_fields], tf.float64, name="features")])  # type: ignore[untyped-decorator]  # TensorFlow ships no type hints
    def run(features: Any) -> dict[str, Any]:
        proba = graph.forward(tf.cast(features, tf.float32))
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


def build(ir: "ModelIR", graph: "KerasGraph", runtime: str = "onnxruntime") -> Artifact:
    """The ONNX artifact of a Keras model; ``TargetUnavailableError`` without tf2onnx."""
    check_available()
    n = len(ir.fields)
    return Artifact(
        format="onnx",
        filename="model.onnx",
        data=keras_onnx(graph, n),
        runtime=runtime,
        runtime_min_version=RUNTIME_MIN_VERSION,
        input_kind="tensor",
        inputs=[{"name": "features", "dtype": "float64", "shape": [None, n]}],
        outputs=[{"name": "label", "dtype": "int64"}, {"name": "probabilities", "dtype": "float32"}],
    )
