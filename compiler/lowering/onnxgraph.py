"""A ``TensorProgram`` (``Linear`` or ``Forest`` head) as a plain ONNX graph, in double throughout.

Used for Spark ML models (``compiler.ir.SparkEstimator``), whose trees compare doubles: no
float32 cast and no ``TreeEnsembleClassifier`` (whose float thresholds would round Spark's).

* ``Linear``: the IR's encoding and layers replayed in float64 (the scikit-learn ONNX
  preprocessing graph, ``compiler.targets.onnx_sklearn``), then ``MatMul`` + ``Add`` and the
  link, all float64.
* ``Forest``: the encoded raw column values ``u`` (one-hot 0/1, category index, numeric value,
  NaN replaced by the program's raw ``fill``), then ``depth`` unrolled steps of
  ``idx <- u[column[idx]] <= t[idx] ? left[idx] : right[idx]`` with ``GatherElements``, where
  ``t`` is the double whose key is the node's cut (``compiler.lowering.exact``): for every
  non-NaN double, ``u <= from_keys(cut)`` iff ``key(u) <= cut``, so the decisions are exactly
  the folded ones (and therefore Spark's). Leaf values are float64 and summed per row.

Outputs keep the ONNX contract of the other builders: ``label`` int64 [N] (the argmax class
index) and ``probabilities`` float64 [N, n_classes].
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from compiler.lowering import Forest, Linear, TensorProgram
from compiler.lowering.exact import ALWAYS, NEVER, from_keys

INPUT = "features"


def build(program: TensorProgram, name: str) -> Any:
    """The ``onnx.ModelProto`` of ``program`` (opset 18, no ML ops)."""
    from onnx import TensorProto, helper, numpy_helper

    from compiler.targets.onnx_sklearn import _preprocessing

    nodes: list[Any] = []
    inits: list[Any] = []

    def const(key: str, arr: Any, dtype: Any = np.float64) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), f"g_{key}"))
        return f"g_{key}"

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [f"g_{out}"], name=f"g_{out}", **attrs))
        return f"g_{out}"

    ir, head = program.ir, program.head
    if isinstance(head, Linear):
        pre_nodes, pre_inits, x = _preprocessing(ir)
        nodes += pre_nodes
        inits += [numpy_helper.from_array(a, n) for n, a in pre_inits]
        z = node("Add", [node("MatMul", [x, const("coef_t", head.coef.T)], "matmul"), const("intercept", head.intercept)], "margin")
    elif isinstance(head, Forest):
        pre_nodes, pre_inits, u = _preprocessing(dataclasses.replace(ir, layers=()))  # raw u: the folded cuts apply to it
        nodes += pre_nodes
        inits += [numpy_helper.from_array(a, n) for n, a in pre_inits]
        fill = np.asarray(program.fill, dtype=np.float64)
        if np.any(~np.isnan(fill)):
            mask = node("And", [node("IsNaN", [u], "u_isnan"), const("has_fill", ~np.isnan(fill), np.bool_)], "u_fill_mask")
            u = node("Where", [mask, const("fill", np.nan_to_num(fill, nan=0.0)), u], "u_filled")
        thr = np.where(head.cut == ALWAYS, np.inf, np.where(head.cut == NEVER, -np.inf, from_keys(np.where(
            (head.cut == ALWAYS) | (head.cut == NEVER), 0, head.cut))))
        column, left, right = (const(k, a, np.int64) for k, a in (("column", head.column), ("left", head.left), ("right", head.right)))
        t = const("threshold", thr)
        n = node("Slice", [node("Shape", [u], "shape"), const("zero", [0], np.int64), const("one", [1], np.int64)], "n")
        idx = node("Expand", [const("roots", np.asarray(head.roots, np.int64)[None, :], np.int64),
                              node("Concat", [n, const("n_trees", [head.n_trees], np.int64)], "idx_shape", axis=0)], "idx0")
        for d in range(head.depth):
            v = node("GatherElements", [u, node("Gather", [column, idx], f"col{d}")], f"u{d}", axis=1)
            go = node("LessOrEqual", [v, node("Gather", [t, idx], f"t{d}")], f"go{d}")
            idx = node("Where", [go, node("Gather", [left, idx], f"l{d}"), node("Gather", [right, idx], f"r{d}")], f"idx{d + 1}")
        leaf = node("Gather", [const("value", head.value), idx], "leaf_values")  # [N, T, n_out]
        z = node("ReduceSum", [leaf, const("axis1", [1], np.int64)], "sum", keepdims=0)
        if any(b != 0.0 for b in head.base):
            z = node("Add", [z, const("base", head.base)], "margin")
    else:
        raise TypeError(f"no ONNX emitter for head {type(head).__name__}")
    if head.link == "expit":
        p = node("Sigmoid", [z], "p1")
        proba = node("Concat", [node("Sub", [const("one_f", [1.0]), p], "p0"), p], "probabilities_raw", axis=1)
    elif head.link == "softmax":
        proba = node("Softmax", [z], "probabilities_raw", axis=1)
    else:
        proba = z
    nodes.append(helper.make_node("Identity", [proba], ["probabilities"], name="probabilities"))
    nodes.append(helper.make_node("ArgMax", ["probabilities"], ["label"], name="label", axis=1, keepdims=0))
    n_classes = len(ir.estimator.classes)
    graph = helper.make_graph(
        nodes, "edgefleet_" + name,
        [helper.make_tensor_value_info(INPUT, TensorProto.DOUBLE, [None, len(ir.fields)])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, n_classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="edgefleet")
    model.ir_version = min(model.ir_version, 9)
    return model
