"""CoreML target: tree ensembles as one ``TreeEnsembleClassifier`` spec on the encoded input; dense models via ``coreml_nn``.

    ModelIR --compiler.lowering (Forest: exact cuts on raw values)--> TreeEnsembleClassifier spec
            --> artifacts/model.mlmodel; parity by ``evaluate`` (numpy, reads the spec back)

Built with coremltools' own ``tree_ensemble`` builder, not its sklearn converter (disabled above
scikit-learn 1.5.1, and it rejects ColumnTransformer and HistGradientBoosting). The lowering has
already folded every column's preprocessing into the cut, so the ensemble reads the manifest's
encoded features directly (input ``features``: MultiArray double [F]) and needs no scaler,
imputer or one-hot models in front of it:

* value column: ``x <= c`` (``BranchOnValueLessThanEqual``), where ``c`` is the last double that
  goes left in scikit-learn; an imputed column sends NaN where its fill value goes
  (``missingValueTracksTrueChild``).
* one-hot column: ``x != index`` or ``x == index`` (``BranchOnValueNotEqual``/``Equal``).
* ordinal column with an unknown value: an extra ``x < 0`` node routes unseen categories.

Precision: thresholds are the exact double cuts ``c``, so an evaluator comparing in double gives
scikit-learn's decision for every input. For the float32 families on an unscaled column,
``float32(c)`` is scikit-learn's own float32 threshold, so a float32 evaluator agrees as well;
on scaled columns and for HistGradientBoosting (which compares doubles) a float32 evaluator may
differ for inputs within one float32 ulp of a cut.

Core ML prediction is macOS-only (``Model prediction is only supported on macOS``). On Linux the
parity gate runs ``evaluate``, a numpy reference evaluator of exactly the emitted spec (not of the
scikit-learn object), and the parity record says so in ``runtime``. LogisticRegression,
MLPClassifier and Keras Dense MLPs are emitted as a ``NeuralNetworkClassifier`` on the same
input by ``compiler.targets.coreml_nn``, with its own float32 reference evaluator.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import CompileError, TargetUnavailableError
from compiler.ir import SklearnEstimator
from compiler.targets import Artifact, NodeTarget

if TYPE_CHECKING:
    import pandas as pd

    from compiler.ir import ModelIR

RUNTIME = "reference-evaluator"  # never "Core ML": coremltools cannot predict on Linux; a numpy evaluator of the emitted spec scores it
FILENAME = "model.mlmodel"
_TRANSFORM = {"proba": "NoTransform", "expit": "Regression_Logistic", "softmax": "Classification_SoftMax"}


class CoremlTarget(NodeTarget):
    name = "coreml"
    runtime = RUNTIME

    def check_available(self) -> None:
        try:
            _quiet_import()
        except ImportError as exc:
            raise TargetUnavailableError(f"the coreml target needs coremltools ({exc}); pip install 'edgefleet[tf]'") from exc

    def unsupported_sklearn_estimator(self, ir: "ModelIR") -> str | None:
        from compiler.lowering import trees
        from compiler.targets import coreml_nn

        if ir.estimator.family in trees.FAMILIES:
            return None
        if ir.estimator.family in ("LogisticRegression", "MLPClassifier"):
            return coreml_nn.unsupported_reason(ir)
        return f"no CoreML emitter for {ir.estimator.family}"

    def unsupported_spark_estimator(self, ir: "ModelIR") -> str | None:
        from compiler.lowering import Forest, unsupported_reason
        from compiler.targets import coreml_nn

        reason = unsupported_reason(ir)
        if reason or isinstance(getattr(ir.estimator, "head", None), Forest):
            return reason
        return coreml_nn.unsupported_reason(ir)

    def build_spark_estimator(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        from compiler.lowering import Forest, lower

        program = lower(ir, "coreml")
        if isinstance(program.head, Forest):
            spec = tree_spec(ir, program, str(meta.get("name", "model")))
            return self._artifact(ir, spec, validate(spec, len(ir.fields)), [])
        return self._dense(ir, meta)

    def unsupported_keras_graph(self, ir: "ModelIR") -> str | None:
        from compiler.targets import coreml_nn

        return coreml_nn.unsupported_reason(ir)

    def runtime_version(self) -> str:
        from importlib import metadata

        return f"coremltools {metadata.version('coremltools')} spec, numpy {np.__version__}"

    def build_sklearn_estimator(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        from compiler.lowering import lower, trees

        if isinstance(ir.estimator, SklearnEstimator) and ir.estimator.family in trees.FAMILIES:
            spec = tree_spec(ir, lower(ir, "coreml"), str(meta.get("name", "model")))
            return self._artifact(ir, spec, validate(spec, len(ir.fields)), [])
        return self._dense(ir, meta)  # LR and MLP take the dense path Keras takes

    def build_keras_graph(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        return self._dense(ir, meta)

    def _dense(self, ir: "ModelIR", meta: dict[str, Any]) -> Artifact:
        from compiler.targets import coreml_nn

        labels = [int(c) for c in ir.estimator.classes] if _int_labels(ir) else [str(c) for c in ir.estimator.classes]
        _quiet_import()
        spec = coreml_nn.nn_spec(ir, str(meta.get("name", "model")), labels)
        notes = ["neural network: Core ML computes in float32 on the CPU; use computeUnits .cpuOnly for parity (GPU/ANE may use float16)"]
        return self._artifact(ir, spec, coreml_nn.validate(spec) + _round_trip(spec), notes)

    def _artifact(self, ir: "ModelIR", spec: Any, problems: list[str], notes: list[str]) -> Artifact:
        if problems:
            raise CompileError(f"coreml target: the emitted spec for {ir.estimator.family} is invalid: {'; '.join(problems[:5])}")
        return Artifact(
            format="coreml",
            filename=FILENAME,
            data=spec.SerializeToString(),
            runtime="coreml",
            runtime_min_version="iOS 13 / macOS 10.15 (specification version 4)",
            input_kind="tensor",
            inputs=[{"name": "features", "dtype": "float64", "shape": [len(ir.fields)]}],
            outputs=[{"name": "label", "dtype": "int64" if _int_labels(ir) else "string"},
                     {"name": "probabilities", "dtype": "record"}],
            notes=["one row per prediction; probabilities is a dictionary class -> probability",
                   "parity on Linux is a numpy evaluator of this spec; on-device Core ML parity needs a Mac", *notes],
        )

    def score(self, artifact: Artifact, ir: "ModelIR", features: np.ndarray, frame: "pd.DataFrame") -> np.ndarray:
        from coremltools.proto import Model_pb2

        spec = Model_pb2.Model()
        spec.ParseFromString(artifact.data)
        if spec.WhichOneof("Type") == "neuralNetworkClassifier":
            from compiler.targets import coreml_nn

            return coreml_nn.evaluate(spec, features)
        return evaluate(spec, features)


def _quiet_import() -> Any:
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("coremltools").setLevel(logging.ERROR)  # "sklearn version not supported" notices
    import coremltools

    return coremltools


def _int_labels(ir: "ModelIR") -> bool:
    return all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in ir.estimator.classes)


def tree_spec(ir: "ModelIR", program: Any, name: str) -> Any:
    """The ``TreeEnsembleClassifier`` spec of a lowered ``Forest`` (see the module docstring)."""
    _quiet_import()
    from coremltools.models import datatypes
    from coremltools.models.tree_ensemble import TreeEnsembleClassifier

    from compiler.lowering.exact import ALWAYS, NEVER, from_keys, keys

    head = program.head
    labels = [int(c) for c in ir.estimator.classes] if _int_labels(ir) else [str(c) for c in ir.estimator.classes]
    b = TreeEnsembleClassifier([("features", datatypes.Array(len(ir.fields)))], labels, ["label", "probabilities"])
    n_nodes = len(head.column)
    ends = np.append(head.roots[1:], n_nodes)
    thresholds = np.where(head.cut == ALWAYS, np.inf, from_keys(head.cut))

    def left_of(raw: float, cut: int) -> bool:  # does raw column value u go left at a node with this cut?
        return bool(keys(raw) <= cut)

    for t, (start, end) in enumerate(zip(head.roots.tolist(), ends.tolist())):
        extra = end - start
        for g in range(start, end):
            node, lo, ro = g - start, int(head.left[g]) - start, int(head.right[g]) - start
            if head.left[g] == g:
                b.add_leaf_node(t, node, [float(v) for v in head.value[g]])
                continue
            col = ir.columns[head.column[g]]
            cut = head.cut[g]
            f = col.field
            if cut == NEVER or cut == ALWAYS:
                go = lo if cut == ALWAYS else ro
                b.add_branch_node(t, node, f, 0.0, "BranchOnValueEqual", go, go)  # both ways to the same child
            elif col.mode == "onehot":  # u = (x == index): left iff u <= c, c in [0, 1) here
                if left_of(0.0, cut) == left_of(1.0, cut):
                    go = lo if left_of(0.0, cut) else ro
                    b.add_branch_node(t, node, f, 0.0, "BranchOnValueEqual", go, go)
                else:
                    b.add_branch_node(t, node, f, float(col.index), "BranchOnValueNotEqual", lo, ro,
                                      missing_value_tracks_true_child=True)  # NaN is no category: u = 0
            elif col.mode == "ordinal":  # u = x, or unknown_value when x < 0 (unseen)
                unseen_child = lo if left_of(col.unknown_value, cut) else ro
                known = extra
                extra += 1
                b.add_branch_node(t, node, f, 0.0, "BranchOnValueLessThan", unseen_child, known)
                b.add_branch_node(t, known, f, float(thresholds[g]), "BranchOnValueLessThanEqual", lo, ro)
            else:
                fill = program.fill[head.column[g]]
                tracks = bool(not np.isnan(fill) and left_of(fill, cut))
                b.add_branch_node(t, node, f, float(thresholds[g]), "BranchOnValueLessThanEqual", lo, ro,
                                  missing_value_tracks_true_child=tracks)
    b.set_default_prediction_value([float(v) for v in head.base])
    b.set_post_evaluation_transform(_TRANSFORM[head.link])
    spec = b.spec
    spec.description.metadata.shortDescription = f"edgefleet {name}: {ir.estimator.family}, input 'features' encoded per the manifest"
    spec.description.predictedProbabilitiesName = "probabilities"
    return spec


def validate(spec: Any, n_fields: int) -> list[str]:
    """Structural checks Core ML's loader would make (it cannot run here): ids, children, features, outputs."""
    problems: list[str] = []
    te = spec.treeEnsembleClassifier.treeEnsemble
    ids = {(n.treeId, n.nodeId) for n in te.nodes}
    if len(ids) != len(te.nodes):
        problems.append("duplicate (treeId, nodeId)")
    for n in te.nodes:
        if n.nodeBehavior != 0:
            for c in (n.trueChildNodeId, n.falseChildNodeId):
                if (n.treeId, c) not in ids:
                    problems.append(f"tree {n.treeId} node {n.nodeId} points to missing node {c}")
            if not 0 <= n.branchFeatureIndex < n_fields:
                problems.append(f"tree {n.treeId} node {n.nodeId} reads feature {n.branchFeatureIndex} of {n_fields}")
        elif any(not 0 <= e.evaluationIndex < te.numPredictionDimensions for e in n.evaluationInfo):
            problems.append(f"tree {n.treeId} leaf {n.nodeId} writes outside {te.numPredictionDimensions} dimensions")
    if len(te.basePredictionValue) != te.numPredictionDimensions:
        problems.append("basePredictionValue has the wrong length")
    return problems + _round_trip(spec)


def _round_trip(spec: Any) -> list[str]:
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as d:  # coremltools' own save/load round trip
        from coremltools.models.utils import load_spec, save_spec

        path = os.path.join(d, FILENAME)
        save_spec(spec, path)
        if load_spec(path).SerializeToString() != spec.SerializeToString():
            problems.append("the spec does not survive coremltools' save_spec/load_spec")
    return problems


def evaluate(spec: Any, features: np.ndarray) -> np.ndarray:
    """Reference evaluator of a ``TreeEnsembleClassifier`` spec, in double, vectorised over rows.

    Semantics per CoreML's TreeEnsemble.proto: a branch compares ``x[branchFeatureIndex]`` with
    ``branchFeatureValue`` and goes to ``trueChildNodeId`` when true; a NaN ``x`` goes where
    ``missingValueTracksTrueChild`` says; leaves add ``evaluationValue`` at ``evaluationIndex``;
    the sum starts at ``basePredictionValue``, then the post-evaluation transform applies.
    """
    from coremltools.proto import TreeEnsemble_pb2

    te = spec.treeEnsembleClassifier.treeEnsemble
    B = TreeEnsemble_pb2.TreeEnsembleParameters.TreeNode.TreeNodeBehavior
    ops = {B.Value("BranchOnValueLessThanEqual"): np.less_equal, B.Value("BranchOnValueLessThan"): np.less,
           B.Value("BranchOnValueGreaterThanEqual"): np.greater_equal, B.Value("BranchOnValueGreaterThan"): np.greater,
           B.Value("BranchOnValueEqual"): np.equal, B.Value("BranchOnValueNotEqual"): np.not_equal}
    nodes = list(te.nodes)
    index = {(n.treeId, n.nodeId): i for i, n in enumerate(nodes)}
    behavior = np.array([n.nodeBehavior for n in nodes])
    feature = np.array([n.branchFeatureIndex for n in nodes], dtype=np.int64)
    value = np.array([n.branchFeatureValue for n in nodes], dtype=np.float64)
    tracks = np.array([n.missingValueTracksTrueChild for n in nodes], dtype=bool)
    leaf = behavior == B.Value("LeafNode")
    own = np.arange(len(nodes))
    true_child = np.array([own[i] if leaf[i] else index[(n.treeId, n.trueChildNodeId)] for i, n in enumerate(nodes)])
    false_child = np.array([own[i] if leaf[i] else index[(n.treeId, n.falseChildNodeId)] for i, n in enumerate(nodes)])
    leaf_sum = np.zeros((len(nodes), te.numPredictionDimensions))
    for i in np.flatnonzero(leaf):
        for e in nodes[i].evaluationInfo:
            leaf_sum[i, e.evaluationIndex] += e.evaluationValue

    x = np.asarray(features, dtype=np.float64)
    at = np.tile([index[(t, 0)] for t in sorted({n.treeId for n in nodes})], (len(x), 1))  # roots are node 0
    for _ in range(len(nodes)):
        if leaf[at].all():
            break
        v = np.take_along_axis(x, feature[at], axis=1)
        true = np.zeros(at.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            for code, op in ops.items():
                m = behavior[at] == code
                true[m] = op(v[m], value[at][m])
        true = np.where(np.isnan(v), tracks[at], true)
        at = np.where(leaf[at], at, np.where(true, true_child[at], false_child[at]))
    z = np.asarray(te.basePredictionValue, dtype=np.float64) + leaf_sum[at].sum(axis=1)
    transform = spec.treeEnsembleClassifier.postEvaluationTransform
    T = TreeEnsemble_pb2.TreeEnsemblePostEvaluationTransform
    if transform == T.Value("Regression_Logistic"):
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.asarray(np.stack([1.0 - p, p], axis=1))
    if transform == T.Value("Classification_SoftMax"):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))
    return np.asarray(z)
