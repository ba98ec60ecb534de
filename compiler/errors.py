"""Compiler errors.

    CompileError            the compiler refuses: bad model file, bad sample, unsupported step
    ├── UnsupportedStepError  a pipeline step no frontend/target can lower (names class and position)
    ├── UnsupportedNodeError  a target has no handler for an IR node type (names model, target, node)
    ├── TargetUnavailableError a target's toolchain or optional converter is missing (names what to install)
    ├── MissingCapabilityError (compiler.ir) a target asked for a source model the frontend did not expose
    └── ParityError          an artifact's real runtime disagrees with the source model
"""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class CompileError(EdgefleetError):
    """The compiler refuses a model, a sample or a target; the message says which and why."""


class UnsupportedStepError(CompileError):
    def __init__(self, step: str, position: str, reason: str, supported_by: list[str] | None = None) -> None:
        where = f"step {position} ({step})"
        alt = f"; targets that could take it: {', '.join(supported_by)}" if supported_by else "; no edgefleet target supports it yet"
        super().__init__(f"unsupported pipeline {where}: {reason}{alt}")
        self.step, self.position, self.supported_by = step, position, supported_by or []


class UnsupportedNodeError(CompileError):
    """A target has no handler for the IR's estimator node type (m2cgen's interpreter error)."""

    def __init__(self, model: str, target: str, node: str, family: str) -> None:
        super().__init__(f"target {target} cannot take model {model!r}: it has no handler for IR node {node} ({family})")
        self.model, self.target, self.node, self.family = model, target, node, family


class TargetUnavailableError(CompileError):
    """A target's toolchain (Java, an optional extra, a converter such as tf2onnx) is not installed."""


class ParityError(CompileError):
    """At least one artifact failed the parity gate."""
