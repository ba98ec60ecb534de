"""PMML from Spark pipelines (pyspark2pmml, the ``spark-pmml`` extra), scored by pypmml against Spark's transform.

Slow: each conversion starts its own JVM with the JPMML-SparkML JARs (~40 s here).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from edgefleet_cli.samples.telco_churn import LABEL
from tests.compiler.spark.conftest import FAMILIES

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("pyspark2pmml") is None, reason="the spark-pmml extra is not installed")]


@pytest.mark.parametrize("family", FAMILIES)
def test_spark_pipeline_to_pmml_within_1e5_of_spark(family: str, spark_pipeline: Any, spark_holdout: Any, keypair: dict[str, Any]) -> None:
    from compiler import compile

    res = compile(spark_pipeline(family), spark_holdout, targets=["pmml"], name=f"spark-pmml-{family}", version=1,
                  private_key=keypair["private"], label=LABEL, created_at="2026-01-01T00:00:00Z")
    p = res.manifest["parity"][0]
    assert p["passed"] and p["max_abs_diff"] <= 1e-5 and p["label_mismatches"] == 0, p
    assert res.manifest["reference"]["rows"] == len(spark_holdout)  # unseen and missing rows included
    assert b"2026-01-01T00:00:00Z" in res.files["artifacts/model.pmml"]  # reproducible header


def test_pyspark2pmml_jvm_is_gone_after_the_conversion(spark_pipeline: Any, spark_holdout: Any) -> None:
    from compiler.frontends.spark import SparkFrontend
    from compiler.targets import pmml_spark

    ir = SparkFrontend().lower(spark_pipeline("lr"), spark_holdout)
    seen: list[int] = []
    real = pmml_spark._pid_alive

    def spy(pid: int) -> bool:
        seen.append(pid)
        return real(pid)

    pmml_spark._pid_alive = spy  # type: ignore[assignment]
    try:
        data, _notes = pmml_spark.build_pmml(ir, None)
    finally:
        pmml_spark._pid_alive = real  # type: ignore[assignment]
    assert data.startswith(b"<?xml") and seen and not real(seen[0])
