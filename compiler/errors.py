"""Compiler errors.

    CompileError            the compiler refuses: bad model file, bad sample, unsupported step
    ├── UnsupportedStepError  a pipeline step no frontend/target can lower (names class and position)
    ├── TargetUnavailableError a target's toolchain is missing (names what to install)
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


class TargetUnavailableError(CompileError):
    """A target's toolchain (Java, an optional extra) is not installed."""


class ParityError(CompileError):
    """At least one artifact failed the parity gate."""
