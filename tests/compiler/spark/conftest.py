"""Spark ML pipelines on the generated churn data, fitted once per session on the shared ``spark`` fixture.

Each pipeline is StringIndexer(handleInvalid="keep") + OneHotEncoder + Imputer + VectorAssembler
and one classifier (LR, DT, RF, GBT), the issue's acceptance set. ``spark_holdout`` is the
held-out data with rows the training data never had: unseen categories, missing categories
(Spark's "keep" bucket) and the data's own missing numerics (imputed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC

FAMILIES = ("lr", "dt", "rf", "gbt")
_fitted: dict[str, Any] = {}


def spark_frame(spark: Any, frame: Any) -> Any:
    """A Spark DataFrame of the input fields and the (double) label, NaN numerics kept as NaN, missing strings null."""
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField(c, T.StringType(), True) for c in CATEGORICAL]
                          + [T.StructField(c, T.DoubleType(), True) for c in NUMERIC + [LABEL]])
    rows = [tuple(None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in r[: len(CATEGORICAL)])
            + tuple(float(v) for v in r[len(CATEGORICAL):])
            for r in frame[CATEGORICAL + NUMERIC + [LABEL]].itertuples(index=False)]
    return spark.createDataFrame(rows, schema)


def make_stages(family: str) -> list[Any]:
    from pyspark.ml.classification import DecisionTreeClassifier, GBTClassifier, LogisticRegression, RandomForestClassifier
    from pyspark.ml.feature import Imputer, OneHotEncoder, StringIndexer, VectorAssembler

    idx = [f"{c}_idx" for c in CATEGORICAL]
    ohe = [f"{c}_ohe" for c in CATEGORICAL]
    imp = [f"{c}_imp" for c in NUMERIC]
    clf = {
        "lr": lambda: LogisticRegression(labelCol=LABEL, maxIter=50),
        "dt": lambda: DecisionTreeClassifier(labelCol=LABEL, maxDepth=6, seed=1),
        "rf": lambda: RandomForestClassifier(labelCol=LABEL, numTrees=20, maxDepth=5, seed=1),
        "gbt": lambda: GBTClassifier(labelCol=LABEL, maxIter=20, maxDepth=3, seed=1),
    }[family]()
    return [StringIndexer(inputCols=CATEGORICAL, outputCols=idx, handleInvalid="keep"),
            OneHotEncoder(inputCols=idx, outputCols=ohe),
            Imputer(inputCols=NUMERIC, outputCols=imp),
            VectorAssembler(inputCols=ohe + imp, outputCol="features"), clf]


@pytest.fixture(scope="session")
def spark_pipeline(spark: Any, churn_data: dict[str, Any]) -> Any:
    """spark_pipeline(family) -> fitted pyspark.ml.PipelineModel."""
    from pyspark.ml import Pipeline

    train = spark_frame(spark, churn_data["train"]).cache()

    def get(family: str) -> Any:
        if family not in _fitted:
            _fitted[family] = Pipeline(stages=make_stages(family)).fit(train)
        return _fitted[family]

    return get


@pytest.fixture(scope="session")
def spark_holdout(churn_data: dict[str, Any]) -> Any:
    hold = churn_data["holdout"].copy()
    hold["Contract"] = hold["Contract"].astype(object)
    hold.loc[0:19, "Contract"] = "Three year"  # never seen in training
    hold.loc[20:29, "PaymentMethod"] = "Bitcoin"
    hold.loc[30:39, "InternetService"] = None  # missing: Spark's keep bucket, like an unseen one
    assert hold[NUMERIC].isna().any(axis=1).sum() > 10  # the data's own missing numerics (imputed)
    return hold
