"""PMML for Spark ML models (``SparkEstimator``): pyspark2pmml (JPMML-SparkML) in a child process.

pyspark2pmml (AGPL-3.0, the optional extra ``edgefleet[spark-pmml]``) bundles its JARs in the
wheel, so nothing is fetched from Maven; but they must be on the JVM's classpath when the JVM
starts (``spark.jars``), and the compiling process may already run a Spark session without
them (the frontend's, a notebook's, the test suite's). So the conversion runs in a fresh Python
process that starts its own local[1] session bound to 127.0.0.1 with those JARs, loads the saved
PipelineModel folder, calls ``PMMLBuilder(schema, model).buildFile(...)`` and then shuts its
JVM down explicitly: ``spark.stop()``, the py4j gateway's ``shutdown()``, then the JVM process
itself is terminated and waited for (pyspark's gateway JVM otherwise outlives the script). The
child prints that JVM's pid, and the parent checks it is gone.

The PMML's header timestamp is set to the bundle's ``created_at`` so the artifact is
reproducible; it is scored by pypmml like any other PMML (``compiler.targets.pmml.PmmlSession``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any, Sequence

from compiler.errors import CompileError, TargetUnavailableError

if TYPE_CHECKING:
    from compiler.ir import ModelIR

INSTALL_HINT = "pip install 'edgefleet[spark-pmml]' (pyspark2pmml, AGPL-3.0; needs Java)"

_CHILD = r"""
import json, os, sys
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
import pyspark2pmml
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession, types as T

spark = (SparkSession.builder.master("local[1]").appName("edgefleet-pmml").config("spark.ui.enabled", "false")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.jars", pyspark2pmml.spark_jars()).getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
gateway = spark.sparkContext._gateway
proc = getattr(gateway, "proc", None)
print(json.dumps({"jvm_pid": proc.pid if proc is not None else None}), flush=True)
try:
    model = PipelineModel.load(sys.argv[1])
    pyspark2pmml.PMMLBuilder(T.StructType.fromJson(json.loads(sys.argv[3])), model).buildFile(sys.argv[2])
finally:
    spark.stop()
    gateway.shutdown()
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=60)
"""


def check_available() -> None:
    import importlib.util
    import shutil

    if importlib.util.find_spec("pyspark2pmml") is None:
        raise TargetUnavailableError(f"PMML from a Spark ML model needs pyspark2pmml; {INSTALL_HINT}")
    if shutil.which("java") is None:
        raise TargetUnavailableError(f"PMML from a Spark ML model needs Java on PATH; {INSTALL_HINT}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is gone for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def build_pmml(ir: "ModelIR", created_at: str | None) -> tuple[bytes, list[str]]:
    """The PMML bytes for a Spark IR and notes for the manifest."""
    from compiler.frontends.spark import CAPABILITY

    pipe = ir.source_model(CAPABILITY)
    kinds = {"numeric": "double", "boolean": "boolean", "categorical": "string"}
    columns = [(f.name, kinds[f.type]) for f in ir.fields]
    label = getattr(pipe, "label_col", None)  # JPMML-SparkML needs the label column to type the target field
    if label and label not in ir.field_names:
        columns.append((label, "string" if getattr(pipe, "label_indexed", False) else "double"))
    schema = {"type": "struct", "fields": [{"name": n, "type": t, "nullable": True, "metadata": {}} for n, t in columns]}
    with tempfile.TemporaryDirectory(prefix="edgefleet-spark-pmml-") as tmp:
        out = os.path.join(tmp, "model.pmml")
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(pipe.path), out, json.dumps(schema)],
                              capture_output=True, text=True, timeout=900, env=env, check=False)
        pid = None
        for line in proc.stdout.splitlines():
            if line.startswith('{"jvm_pid"'):
                pid = json.loads(line)["jvm_pid"]
        if proc.returncode != 0 or not os.path.exists(out):
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip() and "WARN" not in ln and not ln.lstrip().startswith("at ")]
            tail = [ln for ln in lines if "Exception" in ln or "Error" in ln][-1:] or lines[-1:] or ["no output"]
            raise CompileError(f"pmml target: pyspark2pmml could not convert {ir.estimator.family}: {tail[0][:300]}")
        if pid is not None and _pid_alive(int(pid)):
            raise CompileError(f"pmml target: pyspark2pmml's JVM (pid {pid}) is still running after the conversion")
        ET.register_namespace("", "http://www.dmg.org/PMML-4_4")
        ET.register_namespace("data", "http://jpmml.org/jpmml-model/InlineTable")
        doc = ET.parse(out)
    notes = ["converted by pyspark2pmml (JPMML-SparkML) from the Spark PipelineModel"]
    if _expose_probabilities(doc.getroot(), ir.estimator.classes):
        notes.append("probability(<class>) output fields added to the top-level model (JPMML-SparkML kept them in the last segment)")
    stamp = doc.getroot().find("{http://www.dmg.org/PMML-4_4}Header/{http://www.dmg.org/PMML-4_4}Timestamp")
    if stamp is not None and created_at:
        stamp.text = created_at
    buf = io.BytesIO()
    doc.write(buf, encoding="UTF-8", xml_declaration=True)
    return buf.getvalue(), notes


def _expose_probabilities(root: ET.Element, classes: Sequence[Any]) -> bool:
    """Add ``probability(c)`` output fields to the top model when only a nested segment has them (GBT).

    JPMML-SparkML writes a GBT classifier as a model chain whose last segment (a logit
    RegressionModel) outputs the probabilities; the top-level Output lists only ``prediction``,
    so pypmml exposes no probability. A top-level ``feature="probability"`` field refers to the
    chain's final prediction, which is that segment's.
    """
    ns = "{http://www.dmg.org/PMML-4_4}"
    top = next((el for el in root if el.tag.endswith("Model") and el.tag != f"{ns}Header"), None)
    out = top.find(f"{ns}Output") if top is not None else None
    if out is None:
        return False
    have = {f.get("name") for f in out.findall(f"{ns}OutputField")}
    added = False
    for c in classes:
        name = f"probability({c})"
        if name not in have:
            ET.SubElement(out, f"{ns}OutputField", {"name": name, "optype": "continuous", "dataType": "double",
                                                   "feature": "probability", "value": str(c)})
            added = True
    return added
