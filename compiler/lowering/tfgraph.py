"""Emit a ``TensorProgram`` as a TensorFlow function over the float64 ``features`` tensor.

Only ops that TFLite's builtin kernels run are used (no Flex/select-TF ops): on float64 just
``Cast`` and ``Bitcast`` (TFLite has no float64 arithmetic, comparison or gather); int64
``Sub``, ``Less``/``LessEqual``, ``Equal``, ``Select`` and ``Gather`` for the exact tree
decisions; float32 everywhere else. Tree traversal is unrolled ``depth`` times (Hummingbird's
tree-traversal strategy): each step gathers every tree's current node, its column key and its
cut, and moves all rows of all trees at once. Leaves point to themselves.

``input_dtype="float32x3"`` is for TF.js, which has neither float64 nor int64: the input is
float32 [N, F, 3], each double ``x`` split as ``split3`` does (``a = f32(x)``, ``b = f32(x - a)``,
``c = f32(x - a - b)``; ``b = c = 0`` when ``a`` is not finite). The split is canonical and
monotone, so ``x <= t`` is exactly the lexicographic comparison of the parts of ``x`` and ``t``:
tree decisions stay exact with float32 ops only. Float heads use the part ``a``, which is the
float32 value they would compute from anyway.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from compiler.lowering import Forest, Linear, Perceptron, TensorProgram
from compiler.lowering.exact import INT64_MIN, keys

INPUT = "features"
OUTPUT = "probabilities"
_NAN_MAG = 0x7FF0000000000000  # |bits| above this is a NaN


def tf_function(program: TensorProgram, input_dtype: str = "float64", barrier: bool = False) -> Any:
    """A concrete ``tf.function`` (features [N, F]) -> {"probabilities": float32 [N, K]}.

    ``input_dtype="float32"`` is for runtimes without float64 (TF.js): float heads only, since
    exact tree decisions need the double's bits.

    ``barrier`` (for int8 dynamic-range quantization) clamps the feature row to +-3e38 before
    the first matmul. Without it the converter folds the scaler's division into the weights,
    and the hybrid int8 kernel then quantizes *unscaled* activations (TotalCharges ~1e3 next to
    0/1 one-hots) per row: measured max |dp| 0.999 and 63% label agreement on the MLP. With
    it: 0.036 and 99.6%. The clamp changes no finite float32 value below 3e38.
    """
    import tensorflow as tf

    from compiler.lowering import LoweringError

    n_fields = len(program.ir.fields)
    head = program.head
    f32_in = input_dtype == "float32"
    split = input_dtype == "float32x3"
    if f32_in and isinstance(head, Forest):
        raise LoweringError(head.family, "tfjs", "exact tree decisions need float64 inputs, which TF.js lacks")
    spec = tf.TensorSpec([None, n_fields, 3], tf.float32, name=INPUT) if split else \
        tf.TensorSpec([None, n_fields], tf.float32 if f32_in else tf.float64, name=INPUT)

    cp = cut_parts(head) if split and isinstance(head, Forest) else None  # raises before tracing

    @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]  # TensorFlow ships no type hints
    def run(features: Any) -> dict[str, Any]:
        if isinstance(head, Forest) and cp is not None:
            out = _forest_split3(tf, head, cp, _column_parts(tf, program, features))
        elif isinstance(head, Forest):
            out = _forest(tf, program, head, _column_keys(tf, program, features))
        else:
            if split:
                features, f32_in_ = tf.unstack(features, axis=2)[0], True
            else:
                f32_in_ = f32_in
            x = _columns_f32(tf, program, features, f32_in_)
            if barrier:
                x = tf.clip_by_value(x, -3.0e38, 3.0e38)
            out = _linear(tf, head, x) if isinstance(head, Linear) else _mlp(tf, head, x)
        return {OUTPUT: out}

    return run.get_concrete_function()


def _columns_f32(tf: Any, program: TensorProgram, features: Any, f32_in: bool = False) -> Any:
    """The estimator's feature row in float32: encoding, then the IR's layers."""
    cols = program.ir.columns
    if f32_in:
        return _layers_f32(tf, program, tf.gather(features, [c.field for c in cols], axis=1))
    # gather on the int64 bits: TFLite has no float64 Gather, and the converter would move a
    # gather after a float64->float32 Cast back before it
    bits = tf.gather(tf.bitcast(features, tf.int64), [c.field for c in cols], axis=1)
    return _layers_f32(tf, program, tf.cast(tf.bitcast(bits, tf.float64), tf.float32))


def _layers_f32(tf: Any, program: TensorProgram, x: Any) -> Any:
    cols = program.ir.columns
    modes = [c.mode for c in cols]
    if "onehot" in modes:
        hot = tf.cast(tf.equal(x, np.array([c.index if c.mode == "onehot" else -2 for c in cols], np.float32)), tf.float32)
        x = tf.where(np.array([m == "onehot" for m in modes]), hot, x)
    if "ordinal" in modes:
        unseen = tf.logical_and(x < 0.0, np.array([m == "ordinal" for m in modes]))
        x = tf.where(unseen, np.array([c.unknown_value for c in cols], np.float32), x)
    for layer in program.ir.layers:
        v = np.asarray(layer.values, dtype=np.float64)
        if layer.op == "fillnan":
            mask = tf.logical_and(tf.math.is_nan(x), ~np.isnan(v))
            x = tf.where(mask, np.nan_to_num(v, nan=0.0).astype(np.float32), x)
        else:
            c = v.astype(np.float32)
            x = {"sub": lambda a: a - c, "add": lambda a: a + c, "mul": lambda a: a * c, "div": lambda a: a / c}[layer.op](x)
    return x


def _link(tf: Any, link: str, z: Any) -> Any:
    if link == "expit":
        p = tf.sigmoid(z)
        return tf.concat([1.0 - p, p], axis=1)
    if link == "softmax":
        return tf.nn.softmax(z, axis=1)
    return z


def _linear(tf: Any, head: Linear, x: Any) -> Any:
    z = tf.matmul(x, head.coef.T.astype(np.float32)) + head.intercept.astype(np.float32)
    return _link(tf, head.link, z)


def _mlp(tf: Any, head: Perceptron, x: Any) -> Any:
    act = {"relu": tf.nn.relu, "tanh": tf.tanh, "logistic": tf.sigmoid, "identity": lambda a: a}[head.activation]
    n = len(head.weights)
    for i, (w, b) in enumerate(zip(head.weights, head.biases)):
        x = tf.matmul(x, w.astype(np.float32)) + b.astype(np.float32)
        if i < n - 1:
            x = act(x)
    return _link(tf, head.link, x)


def _column_keys(tf: Any, program: TensorProgram, features: Any) -> Any:
    """int64 keys [N, n_columns] of each column's raw value u (see ``compiler.lowering.exact``)."""
    cols = program.ir.columns
    bits = tf.gather(tf.bitcast(features, tf.int64), [c.field for c in cols], axis=1)
    neg = bits < 0
    key = tf.where(neg, INT64_MIN - bits, bits)
    is_nan = tf.where(neg, bits - INT64_MIN, bits) > _NAN_MAG
    fill = np.array([math.nan if c.mode != "value" else f for c, f in zip(cols, program.fill)])
    if np.any(~np.isnan(fill)):
        fill_key = keys(np.nan_to_num(fill, nan=0.0))
        key = tf.where(tf.logical_and(is_nan, ~np.isnan(fill)), fill_key, key)
    modes = [c.mode for c in cols]
    if "onehot" in modes:
        idx_key = keys(np.array([float(c.index) for c in cols]))
        hot = tf.where(tf.equal(key, idx_key), keys(1.0), keys(0.0))
        key = tf.where(np.array([m == "onehot" for m in modes]), hot, key)
    if "ordinal" in modes:
        unknown = keys(np.array([c.unknown_value if c.mode == "ordinal" else 0.0 for c in cols]))
        key = tf.where(tf.logical_and(key < 0, np.array([m == "ordinal" for m in modes])), unknown, key)
    return key


def _forest(tf: Any, program: TensorProgram, head: Forest, key: Any) -> Any:
    column = tf.constant(head.column)
    cut = tf.constant(head.cut)
    left, right = tf.constant(head.left), tf.constant(head.right)
    n = tf.shape(key)[0]
    idx = tf.tile(tf.constant(head.roots)[None, :], tf.stack([n, 1]))
    for _ in range(head.depth):
        u = tf.gather(key, tf.gather(column, idx), batch_dims=1)
        idx = tf.where(u <= tf.gather(cut, idx), tf.gather(left, idx), tf.gather(right, idx))
    leaf_values = tf.gather(tf.constant(head.value.astype(np.float32)), idx)  # [N, T, n_out]
    z = tf.reduce_sum(leaf_values, axis=1)
    if any(b != 0.0 for b in head.base):
        z = z + np.asarray(head.base, dtype=np.float32)
    return _link(tf, head.link, z)


def split3(x: np.ndarray) -> np.ndarray:
    """Each double as three float32 parts [..., 3] that add back to it exactly (see the module docstring).

    Exact for ``x == 0`` and ``2**-97 <= |x| < 2**128``; beyond float32's range ``a`` is +-inf
    (and NaN stays NaN) with ``b = c = 0``, which still compares correctly with every finite cut.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        a = x.astype(np.float32)
        r = np.where(np.isfinite(a), x - a.astype(np.float64), 0.0)
        b = r.astype(np.float32)
        c = (r - b.astype(np.float64)).astype(np.float32)
    return np.stack([a, b, c], axis=-1)


def split3_exact(x: np.ndarray) -> np.ndarray:
    """Where ``split3`` is exact: the parts add back to ``x`` (infinities count as exact)."""
    p = split3(x).astype(np.float64)
    x = np.asarray(x, dtype=np.float64)
    exact: np.ndarray = np.isinf(x) | (p[..., 0] + p[..., 1] + p[..., 2] == x)
    return exact


def _column_parts(tf: Any, program: TensorProgram, features: Any) -> tuple[Any, Any, Any]:
    """Each column's raw value u as three float32 tensors [N, n_columns]; the parts twin of ``_column_keys``."""
    cols = program.ir.columns
    parts = list(tf.unstack(tf.gather(features, [c.field for c in cols], axis=1), axis=2))

    def replace(mask: Any, values: np.ndarray) -> None:
        new = split3(values)
        for k in range(3):
            parts[k] = tf.where(mask, new[:, k], parts[k])

    fill = np.array([math.nan if c.mode != "value" else f for c, f in zip(cols, program.fill)])
    if np.any(~np.isnan(fill)):
        replace(tf.logical_and(tf.math.is_nan(parts[0]), ~np.isnan(fill)), np.nan_to_num(fill, nan=0.0))
    modes = [c.mode for c in cols]
    if "onehot" in modes:
        idx = split3(np.array([float(c.index) for c in cols]))
        eq = tf.logical_and(tf.logical_and(tf.equal(parts[0], idx[:, 0]), tf.equal(parts[1], idx[:, 1])), tf.equal(parts[2], idx[:, 2]))
        hot = tf.where(eq, 1.0, 0.0)
        is_hot = np.array([m == "onehot" for m in modes])
        parts = [tf.where(is_hot, hot, parts[0]), tf.where(is_hot, 0.0, parts[1]), tf.where(is_hot, 0.0, parts[2])]
    if "ordinal" in modes:
        unknown = np.array([c.unknown_value if c.mode == "ordinal" else 0.0 for c in cols])
        replace(tf.logical_and(parts[0] < 0.0, np.array([m == "ordinal" for m in modes])), unknown)
    return parts[0], parts[1], parts[2]


def cut_parts(head: Forest) -> np.ndarray:
    """Per node, the last double going left as float32 parts [n_nodes, 3]; NaN parts: never left."""
    from compiler.lowering import LoweringError
    from compiler.lowering.exact import ALWAYS, NEVER, from_keys

    c = np.where(head.cut == ALWAYS, np.inf, from_keys(head.cut))  # ALWAYS's key is a NaN's bits
    ok = split3_exact(c) | (head.cut == NEVER)
    if not ok.all():
        raise LoweringError(head.family, "tfjs", f"{int((~ok).sum())} tree cut(s) lie outside the exact range of the float32x3 split (|t| < 2**-97 or >= 2**128)")
    p = split3(c)
    p[head.cut == NEVER] = np.nan
    return p


def _forest_split3(tf: Any, head: Forest, cp: np.ndarray, u: tuple[Any, Any, Any]) -> Any:
    cuts = [tf.constant(cp[:, k]) for k in range(3)]
    column = tf.constant(head.column)
    left, right = tf.constant(head.left), tf.constant(head.right)
    n = tf.shape(u[0])[0]
    idx = tf.tile(tf.constant(head.roots)[None, :], tf.stack([n, 1]))
    for _ in range(head.depth):
        col = tf.gather(column, idx)
        ua, ub, uc = (tf.gather(p, col, batch_dims=1) for p in u)
        ca, cb, cc = (tf.gather(p, idx) for p in cuts)
        go_left = tf.logical_or(ua < ca, tf.logical_and(
            tf.equal(ua, ca), tf.logical_or(ub < cb, tf.logical_and(tf.equal(ub, cb), uc <= cc))))
        idx = tf.where(go_left, tf.gather(left, idx), tf.gather(right, idx))
    leaf_values = tf.gather(tf.constant(head.value.astype(np.float32)), idx)
    z = tf.reduce_sum(leaf_values, axis=1)
    if any(b != 0.0 for b in head.base):
        z = z + np.asarray(head.base, dtype=np.float32)
    return _link(tf, head.link, z)
