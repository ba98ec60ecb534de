"""The small description a frontend lowers a trained model into, and targets consume.

A model is: ordered input ``fields`` (the manifest's input schema), an ``encoding`` of each
record into one float64 row (numeric value, category index, 0/1), elementwise ``layers`` that
turn that row into the estimator's feature row, and the ``estimator``. Every layer is exact in
IEEE double arithmetic, so a target that replays them in double reproduces scikit-learn's
feature values bit for bit; precision choices are confined to the estimator.

All nodes are frozen dataclasses: tests compare them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

FieldType = Literal["numeric", "categorical", "boolean"]
MissingPolicy = Literal["impute", "unseen", "reject"]
UnseenPolicy = Literal["ignore", "reject"]


@dataclass(frozen=True)
class Field:
    """One input field. Categorical fields are fed to tensor artifacts as their category index.

    ``missing``: "impute" (numeric: a fillnan layer handles NaN; categorical: ``fill`` or a
    NaN category), "unseen" (a missing category is treated like an unseen one), "reject".
    ``unseen`` (categorical): "ignore" maps an unknown category to index -1, "reject" refuses it.
    """

    name: str
    type: FieldType
    categories: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    missing: MissingPolicy = "reject"
    unseen: UnseenPolicy = "reject"
    fill: Any = None  # categorical only: the category a missing value becomes


@dataclass(frozen=True)
class Column:
    """One column of the encoded feature row, before the layers.

    ``mode`` "value": the field's numeric value. "onehot": 1.0 when the field's category index
    equals ``index``, else 0.0 (unseen = index -1 gives all zeros). "ordinal": the category index,
    or ``unknown_value`` for an unseen category.
    """

    field: int
    mode: Literal["value", "onehot", "ordinal"] = "value"
    index: int = -1
    unknown_value: float = math.nan


@dataclass(frozen=True)
class Layer:
    """Elementwise op over all columns: x <- x OP values[j]. Identity entries are exact no-ops.

    ``fillnan``: replace NaN by values[j] where values[j] is not NaN. ``sub``/``div``/``mul``/
    ``add``: IEEE double arithmetic with 0/1/1/0 as identity.
    """

    op: Literal["fillnan", "sub", "div", "mul", "add"]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Estimator:
    """The final model. ``family`` is the sklearn class name; ``obj`` is the fitted object."""

    family: str
    n_features: int
    classes: tuple[Any, ...]
    obj: Any = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class ModelIR:
    framework: str
    framework_version: str
    estimator_chain: tuple[str, ...]
    fields: tuple[Field, ...]
    columns: tuple[Column, ...]
    layers: tuple[Layer, ...]
    estimator: Estimator
    positive_class: Any
    threshold: float = 0.5
    source: Any = field(compare=False, repr=False, default=None)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]
