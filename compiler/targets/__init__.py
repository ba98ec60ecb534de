"""Targets turn a ``ModelIR`` into one artifact and score it with that format's real runtime.

Every target implements the ``Target`` protocol below; ``compiler.default_targets()`` builds a
registry holding the built-in ones, and a later issue adds TFLite, TF.js and CoreML there
without touching these modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

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
