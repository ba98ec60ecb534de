"""The small description a frontend lowers a trained model into, and targets consume.

A model is: ordered input ``fields`` (the manifest's input schema), an ``encoding`` of each
record into one float64 row (numeric value, category index, 0/1), elementwise ``layers`` that
turn that row into the estimator's feature row, and the ``estimator`` node. Every layer is exact
in IEEE double arithmetic, so a target that replays them in double reproduces scikit-learn's
feature values bit for bit; precision choices are confined to the estimator.

The estimator node's *type* says what it is, and targets dispatch on it
(``compiler.targets.NodeTarget``, m2cgen's interpreter style), never on ``framework``:

    SklearnEstimator   a fitted scikit-learn final estimator (read by compiler.lowering, skl2onnx)
    KerasGraph         a Keras classifier lowered once by the Keras frontend: its layer list
                       (``KerasLayer``), a traceable float32 forward function and a SavedModel
                       exporter
    SparkEstimator     a Spark ML classifier read by ``compiler.frontends.spark``, already in
                       the lowering's head form (``compiler.lowering.Linear`` or ``Forest``,
                       decisions folded for Spark's double comparisons)

A target that has no handler for a node raises an error naming the model, the target and the
node. A new frontend (Spark ML, ...) adds its node type here and is one ``register`` call;
targets that never learn the node refuse it by name.

The source model is not an attribute targets may poke: a frontend lists what it exposes as
``SourceCapability`` entries, and a target asks ``ir.source_model("sklearn-pipeline")``, which
raises ``MissingCapabilityError`` naming what is available when the frontend exposed none.

All nodes are frozen dataclasses: tests compare them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union

from compiler.errors import CompileError

FieldType = Literal["numeric", "categorical", "boolean"]
MissingPolicy = Literal["impute", "unseen", "reject"]
UnseenPolicy = Literal["ignore", "reject"]


@dataclass(frozen=True)
class Field:
    """One input field. Categorical fields are fed to tensor artifacts as their category index.

    ``missing``: "impute" (numeric: a fillnan layer handles NaN; categorical: ``fill`` or a
    NaN category), "unseen" (a missing category is treated like an unseen one), "reject".
    ``unseen`` (categorical): "ignore" maps an unknown category to index -1, "reject" refuses it.
    """

    name: str
    type: FieldType
    categories: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    missing: MissingPolicy = "reject"
    unseen: UnseenPolicy = "reject"
    fill: Any = None  # categorical only: the category a missing value becomes


@dataclass(frozen=True)
class Column:
    """One column of the encoded feature row, before the layers.

    ``mode`` "value": the field's numeric value. "onehot": 1.0 when the field's category index
    equals ``index``, else 0.0 (unseen = index -1 gives all zeros). "ordinal": the category index,
    or ``unknown_value`` for an unseen category.
    """

    field: int
    mode: Literal["value", "onehot", "ordinal"] = "value"
    index: int = -1
    unknown_value: float = math.nan


@dataclass(frozen=True)
class Layer:
    """Elementwise op over all columns: x <- x OP values[j]. Identity entries are exact no-ops.

    ``fillnan``: replace NaN by values[j] where values[j] is not NaN. ``sub``/``div``/``mul``/
    ``add``: IEEE double arithmetic with 0/1/1/0 as identity.
    """

    op: Literal["fillnan", "sub", "div", "mul", "add"]
    values: tuple[float, ...]


@dataclass(frozen=True)
class SklearnEstimator:
    """A fitted scikit-learn final estimator. ``family`` is its class name; ``obj`` the fitted object."""

    family: str
    n_features: int
    classes: tuple[Any, ...]
    obj: Any = field(compare=False, repr=False, default=None)


Estimator = SklearnEstimator  # the name before Keras had its own node


@dataclass(frozen=True)
class KerasLayer:
    """One Keras layer as the frontend read it once.

    ``weights``: Dense ``(kernel [in, out], bias [out])`` (bias absent without one);
    Normalization ``(mean [F], variance [F])``; empty for the others. ``activation`` is the
    Keras activation name ("linear" when the layer has none).
    """

    kind: str  # "InputLayer", "Dense", "Normalization", "Dropout", "Activation"
    name: str
    activation: str = "linear"
    weights: tuple[Any, ...] = field(compare=False, repr=False, default=())


@dataclass(frozen=True)
class KerasGraph:
    """A Keras classifier, lowered once by ``compiler.frontends.keras``.

    ``forward`` is traceable inside a ``tf.function``: float32 [N, n_features] ->
    float32 probabilities [N, len(classes)] in class order (a single sigmoid unit already
    expanded to ``[1 - p, p]``). ``export_saved_model(path)`` writes the model as a TF
    SavedModel whose serving signature returns the raw output (one unit for a sigmoid model);
    TFLite converts that, since ``from_concrete_functions`` on Keras 3 scored NaN (issue 3).
    """

    family: str  # Sequential, Functional
    n_features: int
    classes: tuple[Any, ...]
    layers: tuple[KerasLayer, ...]
    forward: Callable[[Any], Any] = field(compare=False, repr=False)
    export_saved_model: Callable[[str], None] = field(compare=False, repr=False)


@dataclass(frozen=True)
class SparkEstimator:
    """A fitted Spark ML classifier, lowered by ``compiler.frontends.spark``.

    ``head`` is a ``compiler.lowering`` head (``Linear`` for LogisticRegression, ``Forest`` for
    the tree families, with ``float32_inputs=False``: Spark compares doubles), so every target
    that takes the tensor lowering takes it unchanged. ``family`` is the Spark model class
    (``RandomForestClassificationModel``...).
    """

    family: str
    n_features: int
    classes: tuple[Any, ...]
    head: Any = field(compare=False, repr=False, default=None)


EstimatorNode = Union[SklearnEstimator, KerasGraph, SparkEstimator]


class MissingCapabilityError(CompileError):
    """A target asked the IR for a source-model capability its frontend did not expose."""

    def __init__(self, capability: str, available: list[str]) -> None:
        have = ", ".join(available) or "none"
        super().__init__(f"the model's frontend exposes no {capability!r} source model (it exposes: {have})")
        self.capability, self.available = capability, available


@dataclass(frozen=True)
class SourceCapability:
    """The source model, handed out under a named contract.

    Known capabilities: ``"sklearn-pipeline"``, the fitted scikit-learn estimator or Pipeline
    the user compiled (``feature_names_in_``, sklearn2pmml-convertible). A target that needs
    it must deep-copy before mutating: the object is the user's. ``"spark-pipeline"``: a
    ``compiler.frontends.spark.SparkPipeline`` (the saved PipelineModel directory, its loaded
    model and session).
    """

    name: str
    obj: Any = field(compare=False, repr=False)


@dataclass(frozen=True)
class ModelIR:
    framework: str
    framework_version: str
    estimator_chain: tuple[str, ...]
    fields: tuple[Field, ...]
    columns: tuple[Column, ...]
    layers: tuple[Layer, ...]
    estimator: EstimatorNode
    positive_class: Any
    threshold: float = 0.5
    capabilities: tuple[SourceCapability, ...] = ()

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def has_capability(self, capability: str) -> bool:
        return any(c.name == capability for c in self.capabilities)

    def source_model(self, capability: str) -> Any:
        """The source object exposed under ``capability``; ``MissingCapabilityError`` if none."""
        for c in self.capabilities:
            if c.name == capability:
                return c.obj
        raise MissingCapabilityError(capability, [c.name for c in self.capabilities])
