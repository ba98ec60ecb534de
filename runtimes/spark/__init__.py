"""Batch scoring on Apache Spark with the device runtime's verified ``Scorer``.

    from runtimes.spark import BatchConfig, run_batch
    result = run_batch(BatchConfig(bundle="churn-v3.tar", pubkey="public.pem", input="customers.parquet",
                                   entity_column="customerID", output="sqlite:///ops.db?table=churn_scores"))

Modules, along the data: :mod:`~runtimes.spark.job` (the driver: verify, start Spark, read,
``mapInPandas``, progress, summary), :mod:`~runtimes.spark.worker` (what each Python worker runs:
one Scorer per process, the per-batch scoring and rejects), :mod:`~runtimes.spark.sinks` (the
operational database: history, latest, rejects and runs tables, idempotent by run id).
Needs the ``[spark]`` extra (pyspark, pyarrow) and a JVM. Never imports the fleet server.
"""

from runtimes.spark.job import BatchConfig, BatchResult, run_batch
from runtimes.spark.sinks import Output, parse_output

__all__ = ["BatchConfig", "BatchResult", "Output", "parse_output", "run_batch"]
