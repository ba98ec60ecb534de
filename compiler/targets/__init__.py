"""Targets turn a ``ModelIR`` into one artifact and score it with that format's real runtime.

Every target implements the ``Target`` protocol below; ``compiler.default_targets()`` builds a
registry holding the built-in ones.

Targets dispatch on the type of ``ir.estimator`` (``compiler.ir``), m2cgen's interpreter style:
``NodeTarget.build`` calls ``build_<node in snake case>`` (``build_sklearn_estimator``,
``build_keras_graph``), and a target without that method raises ``UnsupportedNodeError`` naming
the model, the target and the node. ``unsupported_reason`` says the same before anything is
built, then asks the optional ``unsupported_<node>`` for node-specific limits; the optional
``available_<node>`` checks a converter only that node needs (tf2onnx for Keras). A target never
branches on the framework name and never reaches into the source model except through
``ir.source_model(capability)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from compiler.errors import UnsupportedNodeError

if TYPE_CHECKING:
    import pandas as pd

    from compiler.ir import ModelIR


@dataclass
class Artifact:
    """What a target produced: bytes plus the manifest entry fields it knows about."""

    format: str
    filename: str
    data: bytes
    runtime: str
    runtime_min_version: str
    input_kind: str  # "tensor": the encoded float64 features; "fields": raw named values
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    quantization: dict[str, Any] | None = None  # {"mode", "tolerance", "unquantized_size"} for a quantized artifact
    requires: dict[str, str] | None = None  # exact library versions the loading side must have (pickle, spark)


class Target(Protocol):
    name: str
    runtime: str

    def check_available(self) -> None:
        """Raise ``TargetUnavailableError`` saying what to install if the toolchain is missing."""

    def unsupported_reason(self, ir: "ModelIR") -> str | None:
        """Why this target cannot take the model, or None."""

    def build(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        """Emit the artifact."""

    def runtime_version(self) -> str:
        """Version of the real runtime used for parity."""

    def score(self, artifact: Artifact, ir: "ModelIR", features: np.ndarray, frame: "pd.DataFrame") -> np.ndarray:
        """Class probabilities (n, n_classes) from the real runtime."""


def node_key(node: object) -> str:
    """``KerasGraph`` -> ``keras_graph``: the suffix of the handler methods for a node type."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(node).__name__).lower()


def handler(target: object, action: str, ir: "ModelIR") -> Callable[..., Any] | None:
    """``target.<action>_<node>`` for the IR's estimator node, or None."""
    fn = getattr(target, f"{action}_{node_key(ir.estimator)}", None)
    return fn if callable(fn) else None


class NodeTarget:
    """Base for targets that dispatch on the estimator node type (see the module docstring)."""

    name: str = ""

    def unsupported_reason(self, ir: "ModelIR") -> str | None:
        if handler(self, "build", ir) is None:
            return f"the {self.name} target has no handler for IR node {type(ir.estimator).__name__} ({ir.estimator.family})"
        check = handler(self, "unsupported", ir)
        return check(ir) if check is not None else None

    def build(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        fn = handler(self, "build", ir)
        if fn is None:
            raise UnsupportedNodeError(str(meta.get("name", "model")), self.name, type(ir.estimator).__name__, ir.estimator.family)
        art: Artifact = fn(ir, meta)
        return art

    def check_available_for(self, ir: "ModelIR") -> None:
        """Raise ``TargetUnavailableError`` if a converter this node needs (e.g. tf2onnx) is missing."""
        check = handler(self, "available", ir)
        if check is not None:
            check(ir)
