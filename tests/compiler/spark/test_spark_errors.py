"""Spark stages the frontend refuses, and handleInvalid mapped to the manifest's policies (lowering only, no targets)."""

from __future__ import annotations

from typing import Any

import pytest

from compiler.errors import UnsupportedStepError
from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC
from tests.compiler.spark.conftest import spark_frame


def _fit(spark: Any, churn_data: dict[str, Any], stages: list[Any]) -> Any:
    from pyspark.ml import Pipeline

    return Pipeline(stages=stages).fit(spark_frame(spark, churn_data["train"].head(400)))


def test_an_unsupported_stage_is_named_with_its_position(spark: Any, churn_data: dict[str, Any]) -> None:
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import Imputer, SQLTransformer, VectorAssembler

    from compiler.frontends.spark import SparkFrontend

    model = _fit(spark, churn_data, [Imputer(inputCols=NUMERIC, outputCols=[f"{c}_i" for c in NUMERIC]),
                                     SQLTransformer(statement="SELECT * FROM __THIS__"),
                                     VectorAssembler(inputCols=[f"{c}_i" for c in NUMERIC], outputCol="features"),
                                     LogisticRegression(labelCol=LABEL, maxIter=5)])
    with pytest.raises(UnsupportedStepError, match=r"step stage 1 \(SQLTransformer\)"):
        SparkFrontend().lower(model, churn_data["holdout"])


@pytest.mark.parametrize("handle,unseen,missing", [("keep", "ignore", "unseen"), ("error", "reject", "reject"), ("skip", "reject", "reject")])
def test_string_indexer_handle_invalid_maps_to_the_unseen_policy(spark: Any, churn_data: dict[str, Any], handle: str,
                                                                 unseen: str, missing: str) -> None:
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler

    from compiler.frontends.spark import SparkFrontend

    cats = CATEGORICAL[:3]
    model = _fit(spark, churn_data, [StringIndexer(inputCols=cats, outputCols=[f"{c}_x" for c in cats], handleInvalid=handle),
                                     OneHotEncoder(inputCols=[f"{c}_x" for c in cats], outputCols=[f"{c}_o" for c in cats], dropLast=False),
                                     VectorAssembler(inputCols=[f"{c}_o" for c in cats] + ["tenure"], outputCol="features"),
                                     LogisticRegression(labelCol=LABEL, maxIter=5)])
    ir = SparkFrontend().lower(model, churn_data["holdout"])
    by_name = {f.name: f for f in ir.fields}
    assert [f.name for f in ir.fields] == cats + ["tenure"]
    assert by_name["gender"].unseen == unseen and by_name["gender"].missing == missing
    assert by_name["tenure"].missing == "reject"  # reaches the assembler unimputed: Spark fails on NaN
    n_labels = sum(len(by_name[c].categories) for c in cats)
    assert len(ir.columns) == n_labels + (3 if handle == "keep" else 0) + 1  # dropLast=False keeps the unseen slot
