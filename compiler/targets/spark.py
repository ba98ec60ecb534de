"""The ``spark`` target: the saved ``PipelineModel`` folder (Spark's MLWritable), packed as one artifact.

The folder is packed deterministically (``pack_dir``): a plain tar of every file under
``model/``, in sorted order, with mtime 0, owner 0 and modes 0644/0755, so the same folder
always gives the same bytes and the same sha256. For ``edgefleet compile MODEL_DIR`` the folder
is the user's own; a ``PipelineModel`` object is saved once by the frontend.

Parity: Spark loads the *packed* artifact (unpacked to a temp folder) and scores the sample with
``transform``; that is also how ``runtimes.python.backends.SparkBackend`` and a Spark job load it
after verification. The entry's ``requires`` names the pyspark version that wrote it. The fleet
server never assigns it to a device that did not declare it runs ``spark``.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import CompileError, TargetUnavailableError
from compiler.targets import Artifact, NodeTarget

if TYPE_CHECKING:
    import pandas as pd

    from compiler.ir import ModelIR

ROOT = "model"


def pack_dir(path: str | os.PathLike[str]) -> bytes:
    """A deterministic tar of the folder's files under ``model/`` (see the module docstring)."""
    base = Path(path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = sorted(p for p in base.rglob("*"))
        for p in [base, *entries]:
            rel = p.relative_to(base).as_posix()
            name = ROOT if rel == "." else f"{ROOT}/{rel}"
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if p.is_symlink():
                raise CompileError(f"spark target: {p} is a symbolic link; a saved PipelineModel holds plain files only")
            if p.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = p.read_bytes()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack(data: bytes, dest: str) -> str:
    """Unpack a packed artifact into ``dest``; returns the PipelineModel folder."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        tar.extractall(dest, filter="data")  # no absolute paths, no links out of dest
    return os.path.join(dest, ROOT)


class SparkTarget(NodeTarget):
    name = "spark"
    runtime = "pyspark"

    def check_available(self) -> None:
        try:
            import pyspark  # noqa: F401
        except ImportError as exc:
            raise TargetUnavailableError(f"the spark target needs pyspark and a Java runtime ({exc}); pip install 'edgefleet[spark]'") from exc

    def runtime_version(self) -> str:
        return metadata.version("pyspark")

    def build_spark_estimator(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        from compiler.frontends.spark import CAPABILITY

        pipe = ir.source_model(CAPABILITY)
        version = metadata.version("pyspark")
        return Artifact(
            format="spark",
            filename="model.spark.tar",
            data=pack_dir(pipe.path),
            runtime=self.runtime,
            runtime_min_version=version,
            input_kind="fields",
            inputs=[{"name": f.name, "dtype": "record"} for f in ir.fields],
            outputs=[{"name": "probability", "dtype": "float64", "shape": [None, len(ir.estimator.classes)]}],
            notes=[f"a Spark ML PipelineModel folder (MLWritable) packed as a tar under {ROOT}/; load with "
                   f"PipelineModel.load after unpacking; its transform adds a 'probability' column"],
            requires={"pyspark": version},
        )

    def score(self, artifact: Artifact, ir: "ModelIR", features: np.ndarray, frame: "pd.DataFrame") -> np.ndarray:
        from pyspark.ml import PipelineModel

        from compiler.frontends.spark import session, transform_proba

        with tempfile.TemporaryDirectory(prefix="edgefleet-spark-parity-") as tmp:
            path = unpack(artifact.data, tmp)
            session()
            try:
                model = PipelineModel.load(path)
            except Exception as exc:  # py4j errors
                raise CompileError(f"spark target: Spark cannot load the packed artifact: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
            return transform_proba(model, frame, ir.fields)
