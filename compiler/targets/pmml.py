"""PMML target (placeholder until the recipe lands)."""
from __future__ import annotations
from compiler.errors import TargetUnavailableError


class PmmlTarget:
    name = "pmml"
    runtime = "pypmml"

    def check_available(self) -> None:
        raise TargetUnavailableError("pmml target not implemented yet")

    def unsupported_reason(self, ir):
        return None

    def build(self, ir, meta):
        raise NotImplementedError

    def score(self, *a):
        raise NotImplementedError

    def runtime_version(self):
        return ""
