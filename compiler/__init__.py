"""The edgefleet compiler: trained model -> frontend -> ModelIR -> targets -> signed bundle.

    >>> from compiler import compile
    >>> result = compile(pipeline, sample_df, targets=["onnx", "pmml"], name="churn",
    ...                  version=1, private_key=key, label="Churn", out_dir="build/churn")

Frontends and targets live in registries (``default_frontends()``, ``default_targets()``), so a
new framework or format is one ``register`` call, not an edit here.
"""

from compiler._compile import CompileResult, compile, default_frontends, default_targets
from compiler.errors import CompileError, ParityError, TargetUnavailableError, UnsupportedStepError

__all__ = [
    "CompileError",
    "CompileResult",
    "ParityError",
    "TargetUnavailableError",
    "UnsupportedStepError",
    "compile",
    "default_frontends",
    "default_targets",
]
