"""scikit-learn frontend: lower a fitted Pipeline into ``ModelIR``.

Accepted shape: ``[ColumnTransformer] -> [elementwise numeric steps...] -> classifier``, or a
bare classifier on numeric columns. Inside a ColumnTransformer each branch is a transformer or
a Pipeline of them: SimpleImputer, StandardScaler, MinMaxScaler, MaxAbsScaler, OneHotEncoder,
OrdinalEncoder, ``"passthrough"`` or ``"drop"``. Anything else raises ``UnsupportedStepError``
naming the step's class and position (``clf``, ``pre/num/1`` ...).

Columns are tracked one by one: each encoded column knows which field it reads and how, and
each scaler or imputer becomes a ``Layer`` of per-column constants with exact identities for
untouched columns. That keeps every target's preprocessing bit-exact with sklearn's.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from compiler.errors import CompileError, UnsupportedStepError
from compiler.frontends._sample import not_a_number
from compiler.ir import Column, Field, FieldType, Layer, MissingPolicy, ModelIR, SklearnEstimator, SourceCapability, UnseenPolicy

if TYPE_CHECKING:
    import pandas as pd

CLASSIFIERS = {
    "LogisticRegression", "DecisionTreeClassifier", "RandomForestClassifier",
    "ExtraTreesClassifier", "GradientBoostingClassifier", "HistGradientBoostingClassifier",
    "MLPClassifier",
}
IDENTITY = {"fillnan": math.nan, "sub": 0.0, "div": 1.0, "mul": 1.0, "add": 0.0}
TARGETS_FOR_ALL = ["onnx", "pmml"]


class _Branch:
    """Columns and layers being built for one ColumnTransformer branch (or the whole model)."""

    def __init__(self, columns: list[Column]) -> None:
        self.columns = columns
        self.layers: list[tuple[str, list[float]]] = []

    def layer(self, op: str, values: Sequence[float]) -> None:
        if len(values) != len(self.columns):
            raise CompileError(f"internal: {op} layer has {len(values)} values for {len(self.columns)} columns")
        self.layers.append((op, [float(v) for v in values]))


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _py(v: Any) -> Any:
    """numpy scalars -> JSON-able Python values; NaN category -> None."""
    if _is_missing(v) or (isinstance(v, np.floating) and np.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


class SklearnFrontend:
    name = "sklearn"

    def accepts(self, model: Any) -> bool:
        return type(model).__module__.startswith("sklearn")

    def lower(self, model: Any, sample: "pd.DataFrame") -> ModelIR:
        import sklearn
        from sklearn.pipeline import Pipeline

        steps: list[tuple[str, Any]] = list(model.steps) if isinstance(model, Pipeline) else [("model", model)]
        est_name, est = steps[-1]
        family = type(est).__name__
        if family not in CLASSIFIERS:
            kind = "a regressor" if hasattr(est, "predict") and not hasattr(est, "predict_proba") else "not supported"
            raise UnsupportedStepError(family, est_name, f"final estimator {family} is {kind}; supported classifiers: {', '.join(sorted(CLASSIFIERS))}")
        if not hasattr(est, "classes_"):
            raise CompileError(f"the model's final step {est_name} ({family}) is not fitted")
        if family == "HistGradientBoostingClassifier" and getattr(est, "is_categorical_", None) is not None and np.any(est.is_categorical_):
            raise UnsupportedStepError(family, est_name, "native categorical_features are not supported; one-hot or ordinal-encode instead")

        field_names = self._input_names(model, steps)
        missing_cols = [c for c in field_names if c not in sample.columns]
        if missing_cols:
            raise CompileError(f"the sample is missing column(s) the model needs: {', '.join(missing_cols)}")
        self._sample = sample
        self._field_names = field_names
        self._cats: dict[int, tuple[Any, ...]] = {}
        self._unseen: dict[int, str] = {}
        self._cat_fill: dict[int, Any] = {}

        transformers = steps[:-1]
        start = 0
        from sklearn.compose import ColumnTransformer

        if transformers and isinstance(transformers[0][1], ColumnTransformer):
            branch = self._lower_column_transformer(transformers[0][1], transformers[0][0])
            start = 1
        else:
            branch = _Branch([Column(i) for i in range(len(field_names))])
        for pos, (name, step) in enumerate(transformers[start:], start=start):
            self._lower_step(branch, step, f"{name}")
        if len(branch.columns) != est.n_features_in_:
            raise CompileError(f"internal: lowered {len(branch.columns)} columns but {family} expects {est.n_features_in_}")

        fields = self._fields(branch)
        chain = tuple(type(s).__name__ for _, s in steps)
        return ModelIR(
            framework="scikit-learn",
            framework_version=sklearn.__version__,
            estimator_chain=chain,
            fields=fields,
            columns=tuple(branch.columns),
            layers=_merge_layers(branch.layers),
            estimator=SklearnEstimator(family, int(est.n_features_in_), tuple(_py(c) for c in est.classes_), est),
            positive_class=_py(est.classes_[-1]) if len(est.classes_) == 2 else None,
            capabilities=(SourceCapability("sklearn-pipeline", model),),
        )

    # -- inputs ---------------------------------------------------------------------------
    def _input_names(self, model: Any, steps: list[tuple[str, Any]]) -> list[str]:
        names = getattr(model, "feature_names_in_", None)
        if names is None:
            names = getattr(steps[0][1], "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        n = getattr(model, "n_features_in_", None) or getattr(steps[-1][1], "n_features_in_", None)
        raise CompileError(
            f"the model was fitted without column names (on a numpy array: n_features_in_={n}, no feature_names_in_), so edgefleet "
            "cannot tell which sample column is which: fit it on a pandas DataFrame with the sample's column names, or pass "
            "--feature-names c1,c2,... (the sample columns in the order the model was trained on)"
        )

    # -- column transformer -----------------------------------------------------------------
    def _lower_column_transformer(self, ct: Any, ct_name: str) -> _Branch:
        if not hasattr(ct, "transformers_"):
            raise CompileError(f"step {ct_name} (ColumnTransformer) is not fitted")
        index_of = getattr(ct, "_transformer_to_input_indices", None)
        if index_of is None:
            raise CompileError("this scikit-learn version does not expose ColumnTransformer input indices")
        all_cols: list[Column] = []
        layers: list[tuple[str, list[float]]] = []
        offsets: list[tuple[int, list[tuple[str, list[float]]]]] = []
        for name, trans, _cols in ct.transformers_:
            idx = [int(i) for i in index_of.get(name, [])]
            if trans == "drop" or not idx:
                continue
            branch = _Branch([Column(i) for i in idx])
            position = f"{ct_name}/{name}"
            if trans != "passthrough":
                sub_steps = list(trans.steps) if hasattr(trans, "steps") else [(None, trans)]
                for k, (sub_name, sub) in enumerate(sub_steps):
                    self._lower_step(branch, sub, f"{position}/{sub_name or k}")
            offsets.append((len(all_cols), branch.layers))
            all_cols.extend(branch.columns)
        for start, branch_layers in offsets:
            for op, vals in branch_layers:
                full = [IDENTITY[op]] * len(all_cols)
                full[start:start + len(vals)] = vals
                layers.append((op, full))
        out = _Branch(all_cols)
        out.layers = layers
        return out

    # -- single steps -------------------------------------------------------------------------
    def _lower_step(self, branch: _Branch, step: Any, position: str) -> None:
        kind = type(step).__name__
        if step == "passthrough" or step is None:
            return
        handler = getattr(self, f"_step_{kind}", None)
        if handler is None:
            raise UnsupportedStepError(
                kind, position,
                "edgefleet lowers only SimpleImputer, StandardScaler, MinMaxScaler, MaxAbsScaler, "
                "OneHotEncoder and OrdinalEncoder before the classifier (FunctionTransformer and "
                "custom steps have no portable form; apply them before calling the model)",
            )
        if not _fitted(step):
            raise CompileError(f"step {position} ({kind}) is not fitted")
        handler(branch, step, position)

    def _numeric_only(self, branch: _Branch, kind: str, position: str) -> None:
        for c in branch.columns:
            if c.mode == "value" and self._is_categorical_field(c.field):
                self._data_error(c.field)
                raise UnsupportedStepError(kind, position, f"it receives string column {self._field_names[c.field]!r}; encode it first")

    def _step_SimpleImputer(self, branch: _Branch, imp: Any, position: str) -> None:
        if imp.add_indicator:
            raise UnsupportedStepError("SimpleImputer", position, "add_indicator=True is not supported")
        if not (isinstance(imp.missing_values, float) and math.isnan(imp.missing_values)):
            raise UnsupportedStepError("SimpleImputer", position, f"missing_values={imp.missing_values!r}; only NaN is supported")
        stats = list(imp.statistics_)
        if len(stats) != len(branch.columns):
            raise UnsupportedStepError("SimpleImputer", position, "it dropped all-missing columns; pass keep_empty_features=True")
        values: list[float] = []
        for col, stat in zip(branch.columns, stats):
            if col.mode == "value" and self._is_categorical_field(col.field):
                self._cat_fill[col.field] = _py(stat)  # categorical imputation happens at encoding
                values.append(math.nan)
            else:
                values.append(float(stat))
        branch.layer("fillnan", values)

    def _step_StandardScaler(self, branch: _Branch, sc: Any, position: str) -> None:
        self._numeric_only(branch, "StandardScaler", position)
        n = len(branch.columns)
        if sc.with_mean:
            branch.layer("sub", sc.mean_)
        if sc.with_std:
            branch.layer("div", sc.scale_)
        if not (sc.with_mean or sc.with_std):
            branch.layer("add", [0.0] * n)

    def _step_MinMaxScaler(self, branch: _Branch, sc: Any, position: str) -> None:
        self._numeric_only(branch, "MinMaxScaler", position)
        if sc.clip:
            raise UnsupportedStepError("MinMaxScaler", position, "clip=True is not supported")
        branch.layer("mul", sc.scale_)
        branch.layer("add", sc.min_)

    def _step_MaxAbsScaler(self, branch: _Branch, sc: Any, position: str) -> None:
        self._numeric_only(branch, "MaxAbsScaler", position)
        branch.layer("div", sc.scale_)

    def _encoder_fields(self, branch: _Branch, kind: str, position: str) -> list[int]:
        if branch.layers and any(op != "fillnan" for op, _ in branch.layers):
            raise UnsupportedStepError(kind, position, "an encoder must come first in its branch (after an optional imputer)")
        if any(c.mode != "value" for c in branch.columns):
            raise UnsupportedStepError(kind, position, "it encodes already-encoded columns")
        for _op, vals in branch.layers:  # an imputer before an encoder fills at encoding time
            for col, v in zip(branch.columns, vals):
                if not math.isnan(v):
                    self._cat_fill[col.field] = v
        return [c.field for c in branch.columns]

    def _set_categories(self, field: int, cats: Sequence[Any], unseen: str, kind: str, position: str) -> tuple[Any, ...]:
        values = tuple(_py(c) for c in cats)
        if field in self._cats and self._cats[field] != values:
            raise UnsupportedStepError(kind, position, f"field {self._field_names[field]!r} is encoded twice with different categories")
        self._cats[field] = values
        self._unseen[field] = "ignore" if unseen == "ignore" and self._unseen.get(field, "ignore") == "ignore" else "reject"
        return values

    def _step_OneHotEncoder(self, branch: _Branch, enc: Any, position: str) -> None:
        fields = self._encoder_fields(branch, "OneHotEncoder", position)
        if getattr(enc, "infrequent_categories_", None) and any(x is not None for x in enc.infrequent_categories_):
            raise UnsupportedStepError("OneHotEncoder", position, "infrequent-category grouping (min_frequency/max_categories) is not supported")
        unseen = "ignore" if enc.handle_unknown in ("ignore", "infrequent_if_exist", "warn") else "reject"
        drop_idx = enc.drop_idx_ if enc.drop_idx_ is not None else [None] * len(fields)
        cols: list[Column] = []
        for f, cats, drop in zip(fields, enc.categories_, drop_idx):
            values = self._set_categories(f, cats, unseen, "OneHotEncoder", position)
            cols.extend(Column(f, "onehot", k) for k in range(len(values)) if drop is None or k != int(drop))
        branch.columns = cols
        branch.layers = []

    def _step_OrdinalEncoder(self, branch: _Branch, enc: Any, position: str) -> None:
        fields = self._encoder_fields(branch, "OrdinalEncoder", position)
        unknown = float(enc.unknown_value) if enc.handle_unknown == "use_encoded_value" else math.nan
        unseen = "ignore" if enc.handle_unknown == "use_encoded_value" else "reject"
        cols: list[Column] = []
        for f, cats in zip(fields, enc.categories_):
            values = self._set_categories(f, cats, unseen, "OrdinalEncoder", position)
            if None in values:
                raise UnsupportedStepError("OrdinalEncoder", position, "a NaN category is not supported; impute before encoding")
            cols.append(Column(f, "ordinal", -1, unknown))
        branch.columns = cols
        branch.layers = []

    def _data_error(self, i: int) -> None:
        """A numeric column with a few text cells is the sample's error (row and value named), not the pipeline's."""
        problem = not_a_number(self._sample, self._field_names[i])
        if problem:
            raise CompileError(problem)

    # -- schema -------------------------------------------------------------------------------
    def _is_categorical_field(self, i: int) -> bool:
        s = self._sample[self._field_names[i]]
        return s.dtype.kind not in "biuf"

    def _fields(self, branch: _Branch) -> tuple[Field, ...]:
        """Fields actually read by some column, in input order, with sample ranges and policies."""
        used = sorted({c.field for c in branch.columns})
        imputed = _imputed_columns(branch)
        out = []
        for i in used:
            name = self._field_names[i]
            s = self._sample[name]
            if i in self._cats:
                cats = self._cats[i]
                fill = self._cat_fill.get(i)
                if fill is not None and fill not in cats and self._unseen[i] == "reject":
                    raise CompileError(f"field {name!r}: imputed value {fill!r} is not a known category")
                missing: MissingPolicy
                if None in cats or fill is not None:
                    missing = "impute"
                else:
                    missing = "unseen" if self._unseen[i] == "ignore" else "reject"
                unseen: UnseenPolicy = "ignore" if self._unseen[i] == "ignore" else "reject"
                out.append(Field(name, "categorical", cats, missing=missing, unseen=unseen, fill=fill))
                continue
            if s.dtype.kind not in "biuf":
                self._data_error(i)
                raise CompileError(f"column {name!r} holds {s.dtype} values but reaches the model unencoded; it must be numeric")
            ftype: FieldType = "boolean" if s.dtype.kind == "b" else "numeric"
            vals = s.to_numpy(dtype=np.float64, na_value=np.nan)
            finite = vals[np.isfinite(vals)]
            cols_of_field = [j for j, c in enumerate(branch.columns) if c.field == i]
            num_missing: MissingPolicy = "impute" if cols_of_field and all(j in imputed for j in cols_of_field) else "reject"
            out.append(Field(
                name, ftype,
                min=float(finite.min()) if finite.size else None,
                max=float(finite.max()) if finite.size else None,
                missing=num_missing,
            ))
        # re-index columns to positions in the used-field list
        pos = {f: k for k, f in enumerate(used)}
        branch.columns = [replace(c, field=pos[c.field]) for c in branch.columns]
        return tuple(out)


def _imputed_columns(branch: _Branch) -> set[int]:
    out: set[int] = set()
    for op, vals in branch.layers:
        if op == "fillnan":
            out.update(j for j, v in enumerate(vals) if not math.isnan(v))
    return out


def _merge_layers(layers: list[tuple[str, list[float]]]) -> tuple[Layer, ...]:
    """Merge neighbouring layers of one op that touch disjoint columns; drop all-identity layers."""
    merged: list[tuple[str, list[float]]] = []
    for op, vals in layers:
        ident = IDENTITY[op]

        def is_id(v: float) -> bool:
            return math.isnan(v) if math.isnan(ident) else v == ident

        if all(is_id(v) for v in vals):
            continue
        if merged and merged[-1][0] == op:
            prev = merged[-1][1]
            if all(is_id(a) or is_id(b) for a, b in zip(prev, vals)):
                merged[-1] = (op, [b if is_id(a) else a for a, b in zip(prev, vals)])
                continue
        merged.append((op, list(vals)))
    return tuple(Layer(op, tuple(v)) for op, v in merged)  # type: ignore[arg-type]


def _fitted(step: Any) -> bool:
    return any(k.endswith("_") and not k.startswith("_") for k in vars(step))
