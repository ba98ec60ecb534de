"""TF.js target: a graph model written by us (no ``tensorflowjs`` pip package), one file per bundle.

    ModelIR --compiler.lowering--> tf.function (float32 ops only) --freeze--> GraphDef
            --> model.tfjs.json (a tf.io.ModelArtifacts object, weights inlined as base64)

Why not the ``tensorflowjs`` converter: it pins TF 2.19 through tensorflow-decision-forests
(about 2.9 GB) and crashed on a protobuf gencode/runtime mismatch; its Keras 3 *layers* models
fail to load in tfjs 4.22 (issue 3). A *graph* model is a frozen GraphDef in JSON plus raw
little-endian weights, which TF's own ``convert_variables_to_constants_v2`` and protobuf's
``MessageToDict`` give us directly. Every ``Const`` becomes a weight (int64 as int32, as tfjs
stores it).

The artifact (``artifacts/model.tfjs.json``) is one JSON object with the fields of
``tf.io.ModelArtifacts``: ``format`` ("graph-model"), ``generatedBy``, ``convertedBy``,
``modelTopology``, ``signature``, ``weightSpecs`` and ``weightData`` (base64 of the
concatenated weights). A browser or Node loads it with three lines::

    const art = await (await fetch(url)).json();
    art.weightData = Uint8Array.from(atob(art.weightData), c => c.charCodeAt(0)).buffer;
    const model = await tf.loadGraphModel(tf.io.fromMemory(art));

Input ``features``: float32 [N, F, 3]. TF.js has no float64 and no int64, so each encoded
double ``x`` (``edgefleet.encoding``, the same values every tensor artifact takes) is passed
as three float32 parts that add back to it exactly (``compiler.lowering.tfgraph.split3``)::

    a = Math.fround(x); if (!Number.isFinite(a)) { b = 0; c = 0 }
    else { b = Math.fround(x - a); c = Math.fround(x - a - b) }

Tree decisions compare the parts lexicographically against cuts split the same way, so they
are exactly scikit-learn's; LR, MLP and Keras use ``a`` (their arithmetic is float32).
Output ``probabilities``: float32 [N, n_classes] in the manifest's class order. Use the
``cpu`` or ``wasm`` backend: WebGL may compute in float16 on some GPUs.

Parity runs the real runtime: Node with ``@tensorflow/tfjs`` (pure JS, cpu backend) from the
repository's ``package.json`` (``make`` runs ``npm ci``), via ``tfjs_score.mjs``, which also
does the split in JS from the float64 row, so the gate covers the device-side encoding too.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import CompileError, TargetUnavailableError
from compiler.ir import KerasGraph
from compiler.targets import Artifact, NodeTarget

if TYPE_CHECKING:
    import pandas as pd

    from compiler.ir import ModelIR

FILENAME = "model.tfjs.json"
OUTPUT = "probabilities"
SCORER = Path(__file__).with_name("tfjs_score.mjs")
ENCODING = "float64-split-float32x3"
INPUT_NOTE = (
    "features: float32 [N, F, 3]; each encoded double x as a = fround(x); b = c = 0 if a is not finite, "
    "else b = fround(x - a), c = fround(x - a - b) (a + b + c == x exactly for x == 0 or 2^-97 <= |x| < 2^128)"
)
LOAD_NOTE = "tf.io.ModelArtifacts JSON; decode weightData from base64 to an ArrayBuffer, then tf.loadGraphModel(tf.io.fromMemory(obj))"
_DTYPES = {np.dtype("float32"): "float32", np.dtype("int32"): "int32", np.dtype("bool"): "bool"}


def node_root() -> Path | None:
    """The folder whose ``node_modules`` holds ``@tensorflow/tfjs``: $EDGEFLEET_NODE_ROOT, the repo, or the cwd."""
    env = os.environ.get("EDGEFLEET_NODE_ROOT")
    for c in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[2], Path.cwd()]:
        if (c / "node_modules" / "@tensorflow" / "tfjs" / "package.json").is_file():
            return c
    return None


class TfjsTarget(NodeTarget):
    name = "tfjs"
    runtime = "@tensorflow/tfjs"

    def check_available(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            import tensorflow  # noqa: F401
        except ImportError as exc:
            raise TargetUnavailableError(f"the tfjs target needs tensorflow to build the graph ({exc}); pip install 'edgefleet[tf]'") from exc
        if shutil.which("node") is None:
            raise TargetUnavailableError("the tfjs target scores parity with Node.js, and `node` is not on PATH; install Node.js >= 18")
        if node_root() is None:
            raise TargetUnavailableError(
                "the tfjs target scores parity with the npm package @tensorflow/tfjs, which is not installed; "
                "run `npm ci` in the edgefleet checkout (make does it) or set EDGEFLEET_NODE_ROOT to a folder whose node_modules has it"
            )

    def unsupported_sklearn_estimator(self, ir: "ModelIR") -> str | None:
        from compiler.lowering import unsupported_reason

        return unsupported_reason(ir)

    unsupported_spark_estimator = unsupported_sklearn_estimator  # the same tensor lowering (compiler.ir.SparkEstimator)

    def runtime_version(self) -> str:
        root = node_root()
        if root is None:
            return "unknown"
        return str(json.loads((root / "node_modules/@tensorflow/tfjs/package.json").read_text())["version"])

    def build_sklearn_estimator(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        return self._artifact(ir, sklearn_function(ir), meta)

    def build_spark_estimator(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        if meta.get("quantize"):
            raise CompileError(f"{self.name} target: Spark models are not quantized")
        return self.build_sklearn_estimator(ir, meta)

    def build_keras_graph(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        assert isinstance(ir.estimator, KerasGraph)  # dispatch chose this handler by node type
        return self._artifact(ir, keras_function(ir.estimator, len(ir.fields)), meta)

    def _artifact(self, ir: "ModelIR", fn: Any, meta: dict[str, Any]) -> Artifact:
        try:
            data = graph_model(fn, meta)
        except CompileError:
            raise
        except Exception as exc:  # TF's freezing raises ValueError/InvalidArgumentError
            raise CompileError(f"tfjs target: could not freeze the graph for {ir.estimator.family}: {type(exc).__name__}: {exc}") from exc
        n = len(ir.fields)
        return Artifact(
            format="tfjs",
            filename=FILENAME,
            data=data,
            runtime=self.runtime,
            runtime_min_version="4.0",
            input_kind="tensor",
            inputs=[{"name": "features", "dtype": "float32", "shape": [None, n, 3], "encoding": ENCODING}],
            outputs=[{"name": OUTPUT, "dtype": "float32", "shape": [None, len(ir.estimator.classes)]}],
            notes=[INPUT_NOTE, LOAD_NOTE],
        )

    def score(self, artifact: Artifact, ir: "ModelIR", features: np.ndarray, frame: "pd.DataFrame") -> np.ndarray:
        return run_tfjs(artifact.data, features, len(ir.estimator.classes))


def sklearn_function(ir: "ModelIR") -> Any:
    from compiler.lowering import lower
    from compiler.lowering.tfgraph import tf_function

    return tf_function(lower(ir, "tfjs"), "float32x3")


def keras_function(graph: KerasGraph, n_fields: int) -> Any:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, n_fields, 3], tf.float32, name="features")])  # type: ignore[untyped-decorator]  # TensorFlow ships no type hints
    def run(features: Any) -> dict[str, Any]:
        return {OUTPUT: graph.forward(tf.unstack(features, axis=2)[0])}

    return run.get_concrete_function()


def graph_model(fn: Any, meta: dict[str, Any]) -> bytes:
    """Freeze a concrete function and write it as one tf.io.ModelArtifacts JSON (see the module docstring)."""
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(fn)
    gd = frozen.graph.as_graph_def()
    specs, blobs = [], []
    for node in gd.node:
        if node.op != "Const":
            continue
        arr = tf.make_ndarray(node.attr["value"].tensor)
        if arr.dtype == np.int64:
            if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
                raise CompileError(f"tfjs target: constant {node.name} holds int64 values beyond int32, which TF.js cannot store")
            arr = arr.astype(np.int32)
        if arr.dtype not in _DTYPES:
            raise CompileError(f"tfjs target: constant {node.name} has dtype {arr.dtype}, which TF.js graph models cannot hold")
        specs.append({"name": node.name, "shape": list(arr.shape), "dtype": _DTYPES[arr.dtype]})
        blobs.append(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        node.attr["value"].tensor.ClearField("tensor_content")
        for f in ("float_val", "int64_val", "int_val", "bool_val", "double_val"):
            node.attr["value"].tensor.ClearField(f)
    art = {
        "format": "graph-model",
        "generatedBy": tf.__version__,
        "convertedBy": f"edgefleet {meta.get('edgefleet_version', '')}".strip(),
        "modelTopology": json_format.MessageToDict(gd),
        "signature": {
            "inputs": {t.name: {"name": t.name} for t in frozen.inputs},
            "outputs": {t.name: {"name": t.name} for t in frozen.outputs},
        },
        "weightSpecs": specs,
        "weightData": base64.b64encode(b"".join(blobs)).decode("ascii"),
    }
    return json.dumps(art, separators=(",", ":"), sort_keys=True).encode()


def run_tfjs(data: bytes, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Score encoded float64 ``features`` [N, F] with Node + @tensorflow/tfjs (cpu backend); float64 [N, n_classes].

    The float32x3 split happens in JS inside ``tfjs_score.mjs``, as on a device.
    """
    root = node_root()
    if root is None or shutil.which("node") is None:
        raise TargetUnavailableError("tfjs parity needs `node` and the npm package @tensorflow/tfjs (run `npm ci`)")
    parts = np.ascontiguousarray(features, dtype="<f8")
    with tempfile.TemporaryDirectory(prefix="edgefleet-tfjs-") as d:
        model, inp, out = Path(d, FILENAME), Path(d, "in.f64"), Path(d, "out.f32")
        model.write_bytes(data)
        inp.write_bytes(parts.tobytes())
        cmd = ["node", str(SCORER), str(root), str(model), str(inp), str(parts.shape[0]), str(parts.shape[1]), str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as exc:
            raise CompileError("tfjs target: Node did not finish scoring within 600 s") from exc
        if proc.returncode != 0:
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("Node.js v")]
            err = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "(no output)")
            raise CompileError(f"tfjs target: @tensorflow/tfjs could not score the artifact: {err}")
        got = np.frombuffer(out.read_bytes(), dtype="<f4").astype(np.float64)
    if got.size != parts.shape[0] * n_classes:
        raise CompileError(f"tfjs target: the model returned {got.size} values for {parts.shape[0]} rows x {n_classes} classes")
    return got.reshape(parts.shape[0], n_classes)
