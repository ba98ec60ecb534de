"""One local Spark session for the whole test run (start-up plus the first action costs ~13 s).

``PYSPARK_PYTHON`` points at this venv's interpreter so the Python workers have pyarrow, onnxruntime
and edgefleet; the UI is off and everything binds to 127.0.0.1. Tests that need a standalone cluster
start their own master and worker (see the batch-scoring tests); this session is ``local[2]``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator


def spark_env() -> dict[str, str]:
    return {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_HOSTNAME": "localhost"}


def start_session(master: str = "local[2]", app: str = "edgefleet-tests") -> Any:
    os.environ.update(spark_env())
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master(master).appName(app)
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate())


def session_fixture() -> Iterator[Any]:
    spark = start_session()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()
