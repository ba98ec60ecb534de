"""ONNX for scikit-learn (``SklearnEstimator`` nodes): our own double-precision preprocessing graph + skl2onnx for the estimator.

Why not convert the whole pipeline with skl2onnx: its float32 default moved RF/GB
probabilities by up to 0.14/0.26 here (StandardScaler in float32 on TotalCharges ~8.6k), and
onnxruntime has no double ``Imputer`` kernel. So the graph takes one float64 tensor
``features`` (encoded as in ``edgefleet.encoding``), replays the IR's exact layers in double
(Gather, Equal for one-hot, Where/IsNaN for imputation, Sub/Div/Mul/Add), and only then hands
the feature row to the estimator:

* tree families that sklearn evaluates on float32 (DecisionTree, RandomForest, ExtraTrees,
  GradientBoosting, HistGradientBoosting's float64 thresholds sit between float32 values we
  never see after scaling) get a Cast to float32 right before the TreeEnsemble, as sklearn does;
* LogisticRegression and MLP stay in double end to end.

Outputs are tensors only (``label`` int64 [N], ``probabilities`` [N, n_classes]): no ZipMap,
whose seq(map) output breaks onnxruntime-web/-node and most non-Python runtimes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import CompileError
from compiler.ir import SklearnEstimator
from compiler.targets import Artifact

if TYPE_CHECKING:
    from compiler.ir import ModelIR

OPSET = 18
ML_OPSET = 3
INPUT = "features"
FLOAT32_TREES = {
    "DecisionTreeClassifier", "RandomForestClassifier", "ExtraTreesClassifier",
    "GradientBoostingClassifier", "HistGradientBoostingClassifier",
}
ONNX_DTYPES = {1: "float32", 7: "int64", 11: "float64", 8: "string"}
RUNTIME_MIN_VERSION = "1.16"


def build(ir: "ModelIR", meta: dict[str, Any], runtime: str = "onnxruntime") -> Artifact:
    """The ONNX artifact of a scikit-learn model (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    est_model = _estimator_model(ir)
    pre_nodes, pre_inits, pre_out = _preprocessing(ir)
    g = est_model.graph
    est_input = g.input[0].name
    for node in g.node:  # wire the estimator to our preprocessing output
        node.input[:] = [pre_out if name == est_input else name for name in node.input]
    graph = helper.make_graph(
        pre_nodes + list(g.node),
        "edgefleet_" + str(meta.get("name", "model")),
        [helper.make_tensor_value_info(INPUT, TensorProto.DOUBLE, [None, len(ir.fields)])],
        list(g.output),
        initializer=[numpy_helper.from_array(a, n) for n, a in pre_inits] + list(g.initializer),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="edgefleet",
        producer_version=str(meta.get("edgefleet_version", "")),
    )
    model.ir_version = min(model.ir_version, 9)
    model.doc_string = f"edgefleet bundle {meta.get('name')} v{meta.get('version')}: input '{INPUT}' is float64 encoded per the manifest's input_schema"
    for key in ("name", "version"):
        entry = model.metadata_props.add()
        entry.key, entry.value = f"edgefleet.{key}", str(meta.get(key, ""))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises several unrelated types here
        raise CompileError(f"onnx target: the emitted graph does not pass onnx.checker: {exc}") from exc
    outputs = [{"name": o.name, "dtype": ONNX_DTYPES.get(o.type.tensor_type.elem_type, "unknown")} for o in model.graph.output]
    return Artifact(
        format="onnx",
        filename="model.onnx",
        data=model.SerializeToString(),
        runtime=runtime,
        runtime_min_version=RUNTIME_MIN_VERSION,
        input_kind="tensor",
        inputs=[{"name": INPUT, "dtype": "float64", "shape": [None, len(ir.fields)]}],
        outputs=outputs,
    )


def _estimator_model(ir: "ModelIR") -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType
    from skl2onnx.sklapi import CastTransformer
    from sklearn.pipeline import Pipeline

    node = ir.estimator
    if not isinstance(node, SklearnEstimator):
        raise CompileError(f"onnx target: skl2onnx converts scikit-learn estimators, not IR node {type(node).__name__}")
    est = node.obj
    conv: Any = est
    if ir.estimator.family in FLOAT32_TREES:
        conv = Pipeline([("cast", CastTransformer(dtype=np.float32)), ("clf", est)])
    try:
        return convert_sklearn(
            conv,
            initial_types=[("X", DoubleTensorType([None, ir.estimator.n_features]))],
            options={id(est): {"zipmap": False}},
            target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, NotImplementedError, MissingShapeCalculator...
        raise CompileError(f"onnx target: skl2onnx could not convert {ir.estimator.family}: {type(exc).__name__}: {exc}") from exc


def _preprocessing(ir: "ModelIR") -> tuple[list[Any], list[tuple[str, np.ndarray]], str]:
    """Nodes replaying the IR's encoding and layers in float64; returns (nodes, inits, output)."""
    from onnx import TensorProto, helper

    cols = ir.columns
    nodes: list[Any] = []
    inits: list[tuple[str, np.ndarray]] = []

    def const(name: str, arr: Any, dtype: Any = np.float64) -> str:
        inits.append((f"ef_{name}", np.asarray(arr, dtype=dtype)))
        return f"ef_{name}"

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [f"ef_{out}"], name=f"ef_{out}", **attrs))
        return f"ef_{out}"

    x = node("Gather", [INPUT, const("src", [c.field for c in cols], np.int64)], "gathered", axis=1)
    modes = [c.mode for c in cols]
    if "onehot" in modes:
        eq = node("Equal", [x, const("onehot_index", [c.index if c.mode == "onehot" else -2 for c in cols])], "onehot_eq")
        hot = node("Cast", [eq], "onehot", to=TensorProto.DOUBLE)
        x = node("Where", [const("is_onehot", [m == "onehot" for m in modes], np.bool_), hot, x], "after_onehot")
    if "ordinal" in modes:
        neg = node("Less", [x, const("zero", 0.0)], "ordinal_neg")
        unseen = node("And", [neg, const("is_ordinal", [m == "ordinal" for m in modes], np.bool_)], "ordinal_unseen")
        x = node("Where", [unseen, const("unknown", [c.unknown_value for c in cols]), x], "after_ordinal")
    for k, layer in enumerate(ir.layers):
        if layer.op == "fillnan":
            isnan = node("IsNaN", [x], f"l{k}_isnan")
            mask = node("And", [isnan, const(f"l{k}_has_fill", [not math.isnan(v) for v in layer.values], np.bool_)], f"l{k}_mask")
            x = node("Where", [mask, const(f"l{k}_fill", [0.0 if math.isnan(v) else v for v in layer.values]), x], f"l{k}_out")
        else:
            op = {"sub": "Sub", "div": "Div", "mul": "Mul", "add": "Add"}[layer.op]
            x = node(op, [x, const(f"l{k}_{layer.op}", layer.values)], f"l{k}_out")
    return nodes, inits, x
