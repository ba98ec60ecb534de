"""Flatten sklearn tree ensembles into one ``Forest`` node table with exact int64 key cuts.

Per family, what a leaf contributes and how the sum becomes probabilities (all as sklearn
computes them, leaf values prepared in double and cast to float32 only in the program):

* DecisionTree: the leaf's class distribution, normalised (``predict_proba``); link ``proba``.
* RandomForest / ExtraTrees: the same divided by the number of trees; link ``proba``.
* GradientBoosting: ``learning_rate * leaf value`` per class column, base = the init
  estimator's raw prediction; ``expit`` (binary) or ``softmax``.
* HistGradientBoosting: leaf values (already shrunk), base = ``_baseline_prediction``; same
  links. HGB compares the double feature, the others the float32-cast feature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.lowering import exact

if TYPE_CHECKING:
    from compiler.ir import ModelIR
    from compiler.lowering import Forest

FAMILIES = {
    "DecisionTreeClassifier", "RandomForestClassifier", "ExtraTreesClassifier",
    "GradientBoostingClassifier", "HistGradientBoostingClassifier",
}

# one tree: (feature, threshold, left, right, is_leaf, value (n_nodes, n_out)) with local indices
_Tree = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _sk_tree(t: Any, out_col: int | None, n_out: int, scale: float, normalise: bool) -> _Tree:
    left, right = t.children_left.astype(np.int64), t.children_right.astype(np.int64)
    leaf = left < 0
    raw = np.asarray(t.value[:, 0, :], dtype=np.float64)
    if normalise:
        s = raw.sum(axis=1, keepdims=True)
        raw = raw / np.where(s == 0, 1.0, s)
    if out_col is None:
        value = raw * scale if scale != 1.0 else raw
    else:
        value = np.zeros((len(left), n_out))
        value[:, out_col] = raw[:, 0] * scale
    return t.feature.astype(np.int64), t.threshold.astype(np.float64), left, right, leaf, value


def _hgb_tree(pred: Any, out_col: int, n_out: int) -> _Tree:
    nodes = pred.nodes
    leaf = nodes["is_leaf"].astype(bool)
    value = np.zeros((len(nodes), n_out))
    value[:, out_col] = nodes["value"]
    return (nodes["feature_idx"].astype(np.int64), nodes["num_threshold"].astype(np.float64),
            nodes["left"].astype(np.int64), nodes["right"].astype(np.int64), leaf, value)


def _trees(family: str, est: Any) -> tuple[list[_Tree], int, tuple[float, ...], str]:
    n_classes = len(est.classes_)
    if family == "DecisionTreeClassifier":
        return [_sk_tree(est.tree_, None, n_classes, 1.0, True)], n_classes, (0.0,) * n_classes, "proba"
    if family in ("RandomForestClassifier", "ExtraTreesClassifier"):
        n = len(est.estimators_)
        return [_sk_tree(e.tree_, None, n_classes, 1.0 / n, True) for e in est.estimators_], n_classes, (0.0,) * n_classes, "proba"
    n_out = 1 if n_classes == 2 else n_classes
    link = "expit" if n_out == 1 else "softmax"
    if family == "GradientBoostingClassifier":
        if est.init_ != "zero" and not type(est.init_).__name__ == "DummyClassifier":
            raise ValueError(f"init estimator {type(est.init_).__name__} is not supported (only the default prior or 'zero')")
        base = est._raw_predict_init(np.zeros((1, est.n_features_in_), dtype=np.float32))[0]
        out = [_sk_tree(t.tree_, k, n_out, float(est.learning_rate), False)
               for stage in est.estimators_ for k, t in enumerate(stage)]
        return out, n_out, tuple(float(b) for b in base), link
    base = np.asarray(est._baseline_prediction, dtype=np.float64).ravel()
    out = [_hgb_tree(p, k, n_out) for it in est._predictors for k, p in enumerate(it)]
    return out, n_out, tuple(float(b) for b in base), link


def _depth(left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> int:
    depth, frontier = 0, [0]
    while frontier:
        nxt = [c for i in frontier if not leaf[i] for c in (int(left[i]), int(right[i]))]
        if nxt:
            depth += 1
        frontier = nxt
    return depth


def forest(ir: "ModelIR", target: str) -> "Forest":
    from compiler.ir import SklearnEstimator
    from compiler.lowering import LoweringError

    family = ir.estimator.family
    if not isinstance(ir.estimator, SklearnEstimator):
        raise LoweringError(family, target, f"no fitted scikit-learn estimator in IR node {type(ir.estimator).__name__}")
    est: Any = ir.estimator.obj
    if family == "HistGradientBoostingClassifier":
        if any(np.any(p.nodes["is_categorical"]) for it in est._predictors for p in it):
            raise LoweringError(family, target, "native categorical splits are not supported")
    try:
        tree_list, n_out, base, link = _trees(family, est)
    except ValueError as exc:
        raise LoweringError(family, target, str(exc)) from exc
    return flatten(family, tree_list, base, link, ir.layers, len(ir.columns), float32=family != "HistGradientBoostingClassifier")


def flatten(family: str, tree_list: "list[_Tree]", base: tuple[float, ...], link: str, layers: Any, n_columns: int,
            float32: bool) -> "Forest":
    """One ``Forest`` from per-tree node tables whose nodes go left iff ``z <= threshold``.

    ``z`` is the column after ``layers``, cast to float32 first when ``float32`` (sklearn's
    float32 families); without it the comparison is in double, as Spark and HistGradientBoosting
    make it. Shared by the scikit-learn and Spark lowerings.
    """
    from compiler.lowering import Forest

    sizes = [len(t[0]) for t in tree_list]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    feature = np.concatenate([t[0] for t in tree_list])
    thresh = np.concatenate([t[1] for t in tree_list])
    leaf = np.concatenate([t[4] for t in tree_list])
    own = np.arange(len(feature), dtype=np.int64)
    left = np.concatenate([t[2] + o for t, o in zip(tree_list, offsets)])
    right = np.concatenate([t[3] + o for t, o in zip(tree_list, offsets)])
    left, right = np.where(leaf, own, left), np.where(leaf, own, right)
    column = np.where(leaf, 0, feature)

    decreasing = exact.decreasing_columns(layers, n_columns)
    cut = np.full(len(feature), exact.ALWAYS, dtype=np.int64)
    inner = ~leaf
    c, swap = exact.fold_thresholds(column[inner], thresh[inner], layers, float32, decreasing)
    cut[inner] = c
    li, ri = left[inner].copy(), right[inner].copy()
    left[inner], right[inner] = np.where(swap, ri, li), np.where(swap, li, ri)

    depth = max(_depth(t[2], t[3], t[4]) for t in tree_list)
    value = np.concatenate([t[5] for t in tree_list])
    return Forest(
        family=family, n_trees=len(tree_list), depth=depth, link=link,  # type: ignore[arg-type]
        float32_inputs=float32, base=base, roots=offsets.astype(np.int32), column=column.astype(np.int32),
        cut=cut, left=left.astype(np.int32), right=right.astype(np.int32), value=value,
    )
