"""Keras frontend: a ``.keras`` classifier on numeric inputs, lowered into ``ModelIR``.

A ``.keras`` file knows neither its input column names nor its class labels, so the user wraps
it once: ``KerasModel.load("churn.keras", feature_names=[...], classes=[0, 1])``. The wrapper
has ``predict_proba`` and ``feature_names_in_`` like a scikit-learn model, which is all
``compiler.compile`` needs from the source model for the parity gate.

Accepted: Sequential or functional models with one input and one output built from
``InputLayer``, ``Dense``, ``Normalization``, ``Dropout`` and ``Activation`` (any activation TF
converts). The output is either one sigmoid unit (binary: p(class 1) = output) or a softmax
over the classes. Other layers raise ``UnsupportedStepError`` naming the layer and position.
Preprocessing lives inside the model (``Normalization``), so the IR has value columns and no
layers; inputs are numeric fields with ``missing: "reject"``.

The estimator node is a ``KerasGraph``: the layer list read once (weights as numpy arrays), a
forward function that targets trace into their own ``tf.function`` and a SavedModel exporter.
No target sees the ``keras.Model`` itself.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from compiler.errors import CompileError, UnsupportedStepError
from compiler.frontends._sample import not_a_number
from compiler.ir import Column, Field, KerasGraph, KerasLayer, ModelIR

if TYPE_CHECKING:
    import pandas as pd

LAYERS = {"InputLayer", "Dense", "Normalization", "Dropout", "Activation"}
TARGETS = ["coreml", "onnx", "tflite", "tfjs"]


class KerasModel:
    """A Keras classifier with the column names and class labels a bundle needs."""

    def __init__(self, model: Any, feature_names: Sequence[str], classes: Sequence[Any] = (0, 1)) -> None:
        self.model = model
        self.feature_names_in_ = np.array([str(n) for n in feature_names], dtype=object)
        self.classes_ = np.array(list(classes))
        self.n_features_in_ = len(self.feature_names_in_)

    @classmethod
    def load(cls, path: str | os.PathLike[str], feature_names: Sequence[str], classes: Sequence[Any] = (0, 1)) -> "KerasModel":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read once, when keras first imports TF
        import keras

        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as exc:  # keras raises ValueError, OSError, zipfile errors...
            raise CompileError(f"cannot load Keras model {os.fspath(path)!r}: {type(exc).__name__}: {exc}") from exc
        return cls(model, feature_names, classes)

    def predict_proba(self, X: Any) -> np.ndarray:
        arr = np.asarray(X, dtype=np.float32)
        out = np.asarray(self.model(arr, training=False), dtype=np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            p = out[:, 0]
            return np.stack([1.0 - p, p], axis=1)
        return out


class KerasFrontend:
    name = "keras"

    def accepts(self, model: Any) -> bool:
        return isinstance(model, KerasModel)

    def lower(self, model: KerasModel, sample: "pd.DataFrame") -> ModelIR:
        import keras

        km = model.model
        if len(km.inputs) != 1 or len(km.outputs) != 1:
            raise UnsupportedStepError(type(km).__name__, "model", "only one input tensor and one output are supported", TARGETS)
        for pos, layer in enumerate(km.layers):
            kind = type(layer).__name__
            if kind not in LAYERS:
                raise UnsupportedStepError(kind, f"layers/{pos} ({layer.name})", f"edgefleet lowers only {', '.join(sorted(LAYERS))}")
        n_in = int(km.inputs[0].shape[-1])
        n_out = int(km.outputs[0].shape[-1])
        names = [str(n) for n in model.feature_names_in_]
        if n_in != len(names):
            raise CompileError(f"the Keras model takes {n_in} inputs but {len(names)} feature names were given")
        classes = tuple(c.item() if isinstance(c, np.generic) else c for c in model.classes_)
        if not (n_out == len(classes) or (n_out == 1 and len(classes) == 2)):
            raise CompileError(f"the Keras model has {n_out} outputs for {len(classes)} classes")
        missing = [n for n in names if n not in sample.columns]
        if missing:
            raise CompileError(f"the sample is missing column(s) the model needs: {', '.join(missing)}")
        fields = []
        for n in names:
            col = sample[n]
            if col.dtype.kind not in "biuf":
                raise CompileError(not_a_number(sample, n) or f"column {n!r} holds {col.dtype} values; a Keras model takes numeric inputs")
            vals = col.to_numpy(dtype=np.float64, na_value=np.nan)
            finite = vals[np.isfinite(vals)]
            fields.append(Field(n, "numeric", min=float(finite.min()) if finite.size else None,
                                max=float(finite.max()) if finite.size else None, missing="reject"))
        return ModelIR(
            framework="keras",
            framework_version=keras.__version__,
            estimator_chain=tuple(type(layer).__name__ for layer in km.layers),
            fields=tuple(fields),
            columns=tuple(Column(i) for i in range(n_in)),
            layers=(),
            estimator=KerasGraph(type(km).__name__, n_in, classes, tuple(_layer(layer) for layer in km.layers),
                                 forward=_forward(km), export_saved_model=_exporter(km)),
            positive_class=classes[-1] if len(classes) == 2 else None,
        )


def _layer(layer: Any) -> KerasLayer:
    kind = type(layer).__name__
    act = getattr(getattr(layer, "activation", None), "__name__", "linear")
    weights: tuple[Any, ...] = ()
    if kind == "Dense":
        weights = tuple(np.asarray(v, np.float64) for v in layer.get_weights())
    elif kind == "Normalization":
        weights = (np.asarray(layer.mean, np.float32).reshape(-1), np.asarray(layer.variance, np.float32).reshape(-1))
    return KerasLayer(kind, str(layer.name), str(act), weights)


def _forward(km: Any) -> Any:
    def forward(x: Any) -> Any:
        import tensorflow as tf

        out = km(x, training=False)
        return tf.concat([1.0 - out, out], axis=1) if out.shape[-1] == 1 else out

    return forward


def _exporter(km: Any) -> Any:
    def export(path: str) -> None:
        km.export(path, format="tf_saved_model", verbose=False)

    return export
