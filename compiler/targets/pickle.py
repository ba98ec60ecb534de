"""The ``pickle`` target: the fitted scikit-learn pipeline itself, as a joblib artifact.

For Python REST servers and Spark jobs that want the exact source model rather than a
conversion. Devices keep preferring ONNX/TFLite: the fleet server never assigns a ``pickle``
artifact to a device that did not declare it (``fleet_server.devices.choose_format``).

Loading a pickle runs code, so the artifact entry carries ``requires``: the exact
``scikit-learn`` and ``python`` versions that wrote it. The runtime
(``runtimes.python.backends.PickleBackend``) unpickles only a verified bundle (signature, then
the artifact's sha256 again) and only when its own versions match; otherwise it refuses, naming
both versions.

Input kind ``fields``: the pipeline takes the raw named values (a DataFrame with the
manifest's input fields). Parity is scored by loading the artifact in a fresh Python process,
so nothing of the compiling process (the fitted object in memory, imported modules) leaks into
the check.
"""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import CompileError, TargetUnavailableError
from compiler.targets import Artifact, NodeTarget

if TYPE_CHECKING:
    import pandas as pd

    from compiler.ir import ModelIR

SOURCE = "sklearn-pipeline"  # the IR capability this target pickles (compiler.ir.SourceCapability)
OUTPUT = "probabilities"

# Runs in a fresh interpreter: argv = artifact path, frame path (pickled DataFrame), output .npy path.
_CHILD = """
import sys, joblib, numpy as np, pandas as pd
model = joblib.load(sys.argv[1])
frame = pd.read_pickle(sys.argv[2])
names = getattr(model, "feature_names_in_", None)
frame = frame.reindex(columns=list(names)) if names is not None else frame
np.save(sys.argv[3], np.asarray(model.predict_proba(frame), dtype=np.float64))
"""


def versions() -> dict[str, str]:
    """What a pickle written here requires of the loading side."""
    import sklearn

    return {"python": platform.python_version(), "scikit-learn": str(sklearn.__version__)}


class PickleTarget(NodeTarget):
    name = "pickle"
    runtime = "scikit-learn"

    def check_available(self) -> None:
        try:
            import joblib  # noqa: F401
            import sklearn  # noqa: F401
        except ImportError as exc:
            raise TargetUnavailableError(f"the pickle target needs scikit-learn and joblib ({exc}); install with: pip install 'edgefleet[compiler]'") from exc

    def runtime_version(self) -> str:
        import sklearn

        return str(sklearn.__version__)

    def unsupported_sklearn_estimator(self, ir: "ModelIR") -> str | None:
        if not ir.has_capability(SOURCE):
            return f"the frontend exposes no {SOURCE!r} source model to pickle"
        return None

    def build_sklearn_estimator(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        import joblib

        model = ir.source_model(SOURCE)
        buf = io.BytesIO()
        try:
            joblib.dump(model, buf, compress=0)
        except Exception as exc:  # a pipeline holding a lambda or an open handle cannot be pickled
            raise CompileError(f"pickle target: cannot pickle the {type(model).__name__}: {type(exc).__name__}: {exc}") from exc
        req = versions()
        return Artifact(
            format="pickle",
            filename="model.joblib",
            data=buf.getvalue(),
            runtime=self.runtime,
            runtime_min_version=req["scikit-learn"],
            input_kind="fields",
            inputs=[{"name": f.name, "dtype": "record"} for f in ir.fields],
            outputs=[{"name": OUTPUT, "dtype": "float64", "shape": [None, len(ir.estimator.classes)]}],
            notes=[f"joblib pickle: loads only with scikit-learn {req['scikit-learn']} on Python {req['python']}; unpickling runs code, "
                   "so load it only from a verified bundle"],
            requires=req,
        )

    def score(self, artifact: Artifact, ir: "ModelIR", features: np.ndarray, frame: "pd.DataFrame") -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="edgefleet-pickle-") as tmp:
            model_path, frame_path, out_path = (os.path.join(tmp, n) for n in ("model.joblib", "frame.pkl", "out.npy"))
            with open(model_path, "wb") as fh:
                fh.write(artifact.data)
            frame[[f.name for f in ir.fields]].to_pickle(frame_path)
            proc = subprocess.run([sys.executable, "-c", _CHILD, model_path, frame_path, out_path],
                                  capture_output=True, text=True, timeout=600, check=False)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise CompileError(f"pickle target: a fresh Python process could not load and score the artifact: {last}")
            return np.asarray(np.load(out_path), dtype=np.float64)
