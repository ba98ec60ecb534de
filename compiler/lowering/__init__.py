"""Lower a scikit-learn ``ModelIR`` into a tensor program that TF-based targets emit.

    ModelIR --lower()--> TensorProgram(ir, head) --compiler.lowering.tfgraph--> tf.function
                                                        --> TFLite (compiler.targets.tflite)

``head`` is one of three frozen nodes: ``Linear`` (LogisticRegression), ``Perceptron``
(MLPClassifier) or ``Forest`` (every tree family, flattened into one node table). The
program keeps the manifest's tensor contract: one float64 input ``features`` encoded per
``edgefleet.encoding`` (category indices, -1 unseen, NaN for imputed numerics).

Precision, by head:

* ``Linear`` and ``Perceptron`` run in float32 (TFLite has no float64 arithmetic): the input
  is cast once, then the IR's layers, the matmuls and the link run in float32. Measured error
  is far below the 1e-5 gate (see the tests' parity numbers).
* ``Forest`` never computes a feature value. ``compiler.lowering.exact`` folds each column's
  layers (and, for float32 families, sklearn's float32 cast) into an int64 key cut on the raw
  double input; the program bit-casts the float64 input to int64 keys and compares integers.
  Decisions are therefore exactly sklearn's; only the leaf sums run in float32.

Errors: ``LoweringError`` (a ``CompileError``) names the model family, the target and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np

from compiler.errors import CompileError
from compiler.ir import ModelIR, SklearnEstimator, SparkEstimator

Link = Literal["proba", "expit", "softmax"]


class LoweringError(CompileError):
    def __init__(self, family: str, target: str, reason: str) -> None:
        super().__init__(f"target {target} cannot lower {family}: {reason}")
        self.family, self.target, self.reason = family, target, reason


@dataclass(frozen=True)
class Linear:
    """``link(x @ coef.T + intercept)``; binary models have one row and the ``expit`` link."""

    link: Link
    coef: np.ndarray = field(compare=False, repr=False)
    intercept: np.ndarray = field(compare=False, repr=False)


@dataclass(frozen=True)
class Perceptron:
    """Dense layers with ``activation`` between them and ``link`` on the last one."""

    activation: Literal["relu", "tanh", "logistic", "identity"]
    link: Link
    weights: tuple[np.ndarray, ...] = field(compare=False, repr=False)
    biases: tuple[np.ndarray, ...] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Forest:
    """All trees of an ensemble in one node table, with decisions folded to int64 key cuts.

    Node ``i`` (global index) goes to ``left[i]`` iff ``key(u[column[i]]) <= cut[i]``. Leaves
    point to themselves, so ``depth`` traversal steps land every tree on its leaf. The output
    is ``link(base + sum over trees of value[leaf])``.
    """

    family: str
    n_trees: int
    depth: int
    link: Link
    float32_inputs: bool  # sklearn casts features to float32 before these trees
    base: tuple[float, ...]
    roots: np.ndarray = field(compare=False, repr=False)
    column: np.ndarray = field(compare=False, repr=False)
    cut: np.ndarray = field(compare=False, repr=False)
    left: np.ndarray = field(compare=False, repr=False)
    right: np.ndarray = field(compare=False, repr=False)
    value: np.ndarray = field(compare=False, repr=False)  # (n_nodes, n_out) float64


Head = Union[Linear, Perceptron, Forest]


@dataclass(frozen=True)
class TensorProgram:
    ir: ModelIR = field(repr=False)
    head: Head
    fill: tuple[float, ...]  # per column: the raw value a NaN input becomes (NaN: none)


def unsupported_reason(ir: ModelIR) -> str | None:
    """Why the tensor lowering (TFLite, TF.js) cannot take ``ir``'s scikit-learn estimator, or None."""
    from compiler.lowering import trees

    if isinstance(ir.estimator, SparkEstimator):
        return None if isinstance(ir.estimator.head, (Linear, Forest)) else f"no tensor lowering for {ir.estimator.family}"
    if not isinstance(ir.estimator, SklearnEstimator):
        return f"the tensor lowering takes scikit-learn estimators, not IR node {type(ir.estimator).__name__}"

    family = ir.estimator.family
    if family in ("LogisticRegression", "MLPClassifier") or family in trees.FAMILIES:
        return None
    return f"no tensor lowering for {family}"


def lower(ir: ModelIR, target: str = "tflite") -> TensorProgram:
    """Lower ``ir`` into a ``TensorProgram``; raise ``LoweringError`` naming what cannot be lowered."""
    from compiler.lowering import exact, trees

    family = ir.estimator.family
    fill, bad = exact.column_fill(ir.layers, len(ir.columns))
    if isinstance(ir.estimator, SparkEstimator):  # the Spark frontend built the head; only the checks below remain
        if isinstance(ir.estimator.head, Forest) and bad:
            raise LoweringError(family, target, f"column(s) {bad} are imputed after being scaled; a tree artifact needs the imputer first")
        if not isinstance(ir.estimator.head, (Linear, Forest)):
            raise LoweringError(family, target, "no tensor lowering for this estimator")
        return TensorProgram(ir, ir.estimator.head, tuple(float(v) for v in fill))
    if not isinstance(ir.estimator, SklearnEstimator):
        raise LoweringError(family, target, f"the tensor lowering takes scikit-learn estimators, not IR node {type(ir.estimator).__name__}")
    est: Any = ir.estimator.obj
    head: Head
    if family == "LogisticRegression":
        coef, icpt = np.asarray(est.coef_, np.float64), np.asarray(est.intercept_, np.float64)
        head = Linear("expit" if coef.shape[0] == 1 else "softmax", coef, icpt)
    elif family == "MLPClassifier":
        if est.activation not in ("relu", "tanh", "logistic", "identity"):
            raise LoweringError(family, target, f"activation {est.activation!r} is not supported")
        link: Link = "expit" if est.out_activation_ == "logistic" else "softmax"
        if est.out_activation_ not in ("logistic", "softmax"):
            raise LoweringError(family, target, f"output activation {est.out_activation_!r} is not supported")
        head = Perceptron(est.activation, link, tuple(np.asarray(w, np.float64) for w in est.coefs_),
                          tuple(np.asarray(b, np.float64) for b in est.intercepts_))
    elif family in trees.FAMILIES:
        if bad:
            raise LoweringError(family, target, f"column(s) {bad} are imputed after being scaled; a tree artifact needs the imputer first")
        for c in ir.columns:
            if c.mode == "ordinal" and np.isnan(c.unknown_value):
                raise LoweringError(family, target, "an OrdinalEncoder with unknown_value=NaN feeds a tree; use a numeric unknown_value")
        head = trees.forest(ir, target)
    else:
        raise LoweringError(family, target, "no tensor lowering for this estimator")
    return TensorProgram(ir, head, tuple(float(v) for v in fill))
