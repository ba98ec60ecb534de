"""CoreML for dense models: LogisticRegression, MLPClassifier and Keras Dense MLPs as one NeuralNetworkClassifier.

    ModelIR --dense_stack()--> DenseStack (column prep, dense layers, link)
            --nn_spec()--> NeuralNetworkClassifier spec (specification version 4, ND layers)
            --> artifacts/model.mlmodel; parity by ``evaluate`` (numpy, reads the spec back)

Built with coremltools' ``NeuralNetworkBuilder`` (the mlprogram format needs a ``.mlpackage``
folder with a separate weights file; a NeuralNetwork spec is one protobuf, like the tree
artifacts). The input is the same as the tree artifacts': ``features``, MultiArray double [F],
encoded per the manifest (category indices, -1 unseen, NaN for imputed numerics). Core ML runs
neural networks in float32 on the CPU (float16 on GPU/ANE: pin ``computeUnits = .cpuOnly`` for
parity), so the spec reproduces the float32 program the TFLite lowering runs:

1. ``gather`` each column's field; one-hot columns become ``equal(index)``; ordinal columns
   with an unseen (negative) index take ``unknown_value`` (``whereBroadcastable``).
2. the IR's layers: ``fillnan`` as ``where(x != x, fill, x)``; sub/add/mul/div as broadcastable
   elementwise ops with constant vectors (Keras ``Normalization`` becomes sub and div).
3. ``innerProduct`` + ``activation`` per dense layer; a binary model's single logit ``z`` is
   emitted as the two logits ``[0, z]`` and ``softmaxND``, which is ``[1 - expit(z), expit(z)]``.

``evaluate`` is a float32 numpy interpreter of exactly these layer types, driven by the spec
it reads (names, constants, weights); any other layer type raises, so it cannot silently
score a spec it does not understand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import CompileError

if TYPE_CHECKING:
    from compiler.ir import KerasGraph, ModelIR

ACTIVATIONS = {"relu": "RELU", "tanh": "TANH", "logistic": "SIGMOID", "sigmoid": "SIGMOID", "identity": "LINEAR", "linear": "LINEAR"}
PROBA = "probabilities"


@dataclass(frozen=True)
class DenseStack:
    """Elementwise pre-ops on the column row, then dense layers; ``link`` is expit or softmax."""

    pre: tuple[tuple[str, np.ndarray], ...]  # ("fillnan"|"sub"|"add"|"mul"|"div", values per column)
    dense: tuple[tuple[np.ndarray, np.ndarray, str], ...]  # (W [out, in], b [out], activation after it)
    link: str


def unsupported_reason(ir: "ModelIR") -> str | None:
    try:
        dense_stack(ir)
    except CompileError as exc:
        return str(exc)
    return None


def dense_stack(ir: "ModelIR") -> DenseStack:
    """The dense form of the IR's estimator node: ``KerasGraph`` layers, or a lowered LR/MLP."""
    from compiler.ir import KerasGraph, SklearnEstimator, SparkEstimator
    from compiler.lowering import Linear, Perceptron, lower

    if isinstance(ir.estimator, KerasGraph):
        return _keras_stack(ir.estimator)
    if not isinstance(ir.estimator, (SklearnEstimator, SparkEstimator)):
        raise CompileError(f"no dense form for IR node {type(ir.estimator).__name__} ({ir.estimator.family})")

    head = lower(ir, "coreml").head
    pre = tuple((layer.op, np.asarray(layer.values, np.float64)) for layer in ir.layers)
    if isinstance(head, Linear):
        return DenseStack(pre, ((head.coef, head.intercept, "identity"),), head.link)
    if isinstance(head, Perceptron):
        n = len(head.weights)
        dense = tuple((w.T, b, head.activation if i < n - 1 else "identity") for i, (w, b) in enumerate(zip(head.weights, head.biases)))
        return DenseStack(pre, dense, head.link)
    raise CompileError(f"no dense form for {ir.estimator.family}")


def _keras_stack(graph: "KerasGraph") -> DenseStack:
    pre: list[tuple[str, np.ndarray]] = []
    dense: list[tuple[np.ndarray, np.ndarray, str]] = []
    link = None
    for layer in graph.layers:
        kind = layer.kind
        if kind in ("InputLayer", "Dropout"):
            continue
        if link is not None:
            raise CompileError(f"Keras layer {layer.name} ({kind}) follows the output activation")
        if kind == "Normalization":
            if dense:
                raise CompileError(f"Keras Normalization layer {layer.name} after a Dense layer has no CoreML emitter yet")
            mean = np.asarray(layer.weights[0], np.float32).reshape(-1)
            std = np.maximum(np.sqrt(np.asarray(layer.weights[1], np.float32).reshape(-1)), np.float32(1e-7))
            pre += [("sub", mean.astype(np.float64)), ("div", std.astype(np.float64))]
            continue
        act = layer.activation
        if kind == "Dense":
            weights = [np.asarray(v, np.float64) for v in layer.weights]
            w = weights[0]
            dense.append((w.T, weights[1] if len(weights) > 1 else np.zeros(w.shape[1]), "identity"))
        elif kind != "Activation" or not dense:
            raise CompileError(f"Keras layer {layer.name} ({kind}) has no CoreML emitter")
        if act in ("sigmoid", "softmax") and dense[-1][0].shape[0] == (1 if act == "sigmoid" else len(graph.classes)):
            link = "expit" if act == "sigmoid" else "softmax"
        elif act == "linear":
            pass
        elif act in ACTIVATIONS:
            w, b, prev = dense[-1]
            if prev != "identity":
                raise CompileError(f"Keras layer {layer.name}: two activations in a row")
            dense[-1] = (w, b, act)
        else:
            raise CompileError(f"Keras activation {act!r} in layer {layer.name} has no CoreML emitter")
    if link is None:
        raise CompileError("the Keras model does not end in a sigmoid or softmax")
    return DenseStack(tuple(pre), tuple(dense), link)


def nn_spec(ir: "ModelIR", name: str, labels: list[Any]) -> Any:
    """The ``NeuralNetworkClassifier`` spec of ``ir`` (see the module docstring)."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    stack = dense_stack(ir)
    cols = ir.columns
    n_cols = len(cols)
    b = NeuralNetworkBuilder([("features", datatypes.Array(len(ir.fields)))], [(PROBA, datatypes.Array(len(labels)))],
                             mode="classifier", disable_rank5_shape_mapping=True)
    k = [0]

    def const(values: Any) -> str:
        k[0] += 1
        nm = f"c{k[0]}"
        arr = np.asarray(values, np.float32).reshape(-1)
        b.add_load_constant_nd(nm, nm, arr, shape=[arr.size])
        return nm

    def op(kind: str, inputs: list[str], **kw: Any) -> str:
        k[0] += 1
        out = f"t{k[0]}"
        getattr(b, f"add_{kind}")(out, inputs, out, **kw)
        return out

    x = op("gather", ["features", const([c.field for c in cols])], axis=0)
    modes = [c.mode for c in cols]
    if "onehot" in modes:
        eq = op("equal", [x, const([c.index if c.mode == "onehot" else -2 for c in cols])])
        x = op("where_broadcastable", [const([m == "onehot" for m in modes]), eq, x])
    if "ordinal" in modes:
        neg = op("less_than", [x, const(np.zeros(n_cols))])
        unseen = op("multiply_broadcastable", [neg, const([m == "ordinal" for m in modes])])
        x = op("where_broadcastable", [unseen, const([c.unknown_value if c.mode == "ordinal" else 0.0 for c in cols]), x])
    for kind, v in stack.pre:
        if kind == "fillnan":
            isnan = op("not_equal", [x, x])
            m = op("multiply_broadcastable", [isnan, const(~np.isnan(v))])
            x = op("where_broadcastable", [m, const(np.nan_to_num(v, nan=0.0)), x])
        else:
            kind_name = {"sub": "subtract", "add": "add", "mul": "multiply", "div": "divide"}[kind]
            x = op(f"{kind_name}_broadcastable", [x, const(v)])
    dense = list(stack.dense)
    if stack.link == "expit":  # one logit z -> two logits [0, z]; softmax of those is [1 - expit(z), expit(z)]
        w, bias, act = dense[-1]
        dense[-1] = (np.vstack([np.zeros_like(w), w]), np.concatenate([[0.0], bias]), act)
    for i, (w, bias, act) in enumerate(dense):
        k[0] += 1
        out = f"t{k[0]}"
        b.add_inner_product(out, W=np.asarray(w, np.float32), b=np.asarray(bias, np.float32), input_channels=w.shape[1],
                            output_channels=w.shape[0], has_bias=True, input_name=x, output_name=out)
        x = out
        if ACTIVATIONS[act] != "LINEAR":
            x = _activation(b, x, ACTIVATIONS[act], k)
    b.add_softmax_nd("softmax", x, PROBA, axis=-1)
    b.set_class_labels(labels, predicted_feature_name="label", prediction_blob=PROBA)
    spec = b.spec
    spec.description.metadata.shortDescription = f"edgefleet {name}: {ir.estimator.family}, input 'features' encoded per the manifest"
    return spec


def _activation(b: Any, x: str, kind: str, k: list[int]) -> str:
    k[0] += 1
    out = f"t{k[0]}"
    b.add_activation(out, kind, x, out)
    return out


def validate(spec: Any) -> list[str]:
    """Every layer reads only blobs defined before it, and the classifier's outputs exist."""
    problems: list[str] = []
    nn = spec.neuralNetworkClassifier
    known = {i.name for i in spec.description.input}
    for layer in nn.layers:
        missing = [i for i in layer.input if i not in known]
        if missing:
            problems.append(f"layer {layer.name} reads undefined blob(s) {missing}")
        known.update(layer.output)
    if spec.description.predictedProbabilitiesName not in known:
        problems.append("the probabilities blob is never produced")
    n_labels = len(nn.int64ClassLabels.vector) or len(nn.stringClassLabels.vector)
    last = [layer for layer in nn.layers if layer.WhichOneof("layer") == "innerProduct"][-1].innerProduct
    if n_labels != last.outputChannels:
        problems.append(f"{n_labels} class labels for {last.outputChannels} output logits")
    return problems


def evaluate(spec: Any, features: np.ndarray) -> np.ndarray:
    """Float32 numpy interpreter of the layer types ``nn_spec`` emits; rows are the leading axis."""
    blobs: dict[str, np.ndarray] = {spec.description.input[0].name: np.asarray(features, np.float64).astype(np.float32)}
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for layer in spec.neuralNetworkClassifier.layers:
            kind = layer.WhichOneof("layer")
            ins = [blobs[i] for i in layer.input]
            if kind == "loadConstantND":
                out = np.asarray(layer.loadConstantND.data.floatValue, np.float32)
            elif kind == "gather":
                out = np.take(ins[0], ins[1].astype(np.int64), axis=-1)
            elif kind in ("equal", "notEqual", "lessThan"):
                cmp: Any = {"equal": np.equal, "notEqual": np.not_equal, "lessThan": np.less}[kind]
                out = cmp(ins[0], ins[1]).astype(np.float32)
            elif kind == "whereBroadcastable":
                out = np.where(ins[0] != 0, ins[1], ins[2]).astype(np.float32)
            elif kind in ("addBroadcastable", "subtractBroadcastable", "multiplyBroadcastable", "divideBroadcastable"):
                arith: Any = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide}[kind[:-len("Broadcastable")]]
                out = arith(ins[0], ins[1]).astype(np.float32)
            elif kind == "innerProduct":
                p = layer.innerProduct
                w = np.asarray(p.weights.floatValue, np.float32).reshape(p.outputChannels, p.inputChannels)
                out = ins[0] @ w.T
                if p.hasBias:
                    out = out + np.asarray(p.bias.floatValue, np.float32)
            elif kind == "activation":
                which = layer.activation.WhichOneof("NonlinearityType")
                x = ins[0]
                if which == "ReLU":
                    out = np.maximum(x, np.float32(0))
                elif which == "tanh":
                    out = np.tanh(x)
                elif which == "sigmoid":
                    out = np.float32(1) / (np.float32(1) + np.exp(-x))
                elif which == "linear":
                    out = x
                else:
                    raise KeyError(which)
            elif kind == "softmaxND":
                x = ins[0]
                e = np.exp(x - x.max(axis=-1, keepdims=True))
                out = e / e.sum(axis=-1, keepdims=True)
            else:
                raise CompileError(f"coreml reference evaluator: layer {layer.name} of type {kind} is not interpreted")
            blobs[layer.output[0]] = np.asarray(out, np.float32)
    return np.asarray(blobs[spec.description.predictedProbabilitiesName], np.float64)
