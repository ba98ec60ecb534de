"""Targets dispatch on the IR node type; the source model is reached only through a capability.

A new frontend is one ``register`` call: here a frontend emitting an IR node no target knows
is registered on a fresh registry, and every built-in target refuses it by name (model, target,
node) instead of guessing from ``ir.framework``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from compiler import CompileError, compile, default_frontends, default_targets
from compiler.errors import UnsupportedNodeError
from compiler.frontends.sklearn import SklearnFrontend
from compiler.ir import MissingCapabilityError, ModelIR, SklearnEstimator
from compiler.targets import node_key


@dataclasses.dataclass(frozen=True)
class SparkPipeline:
    """Stand-in for next issue's Spark ML node: no built-in target has a handler for it."""

    family: str
    n_features: int
    classes: tuple[Any, ...]


class _SparkModel:
    """What a user hands compile(): accepted only by the frontend below."""

    def __init__(self, sklearn_model: Any) -> None:
        self.inner = sklearn_model


class _SparkFrontend:
    name = "spark"

    def accepts(self, model: Any) -> bool:
        return isinstance(model, _SparkModel)

    def lower(self, model: _SparkModel, sample: Any) -> ModelIR:
        ir = SklearnFrontend().lower(model.inner, sample)
        node = SparkPipeline("PipelineModel", ir.estimator.n_features, ir.estimator.classes)
        return dataclasses.replace(ir, framework="spark", estimator=node, capabilities=())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lr(train_model: Any) -> Any:
    return train_model("lr")


def test_node_key_is_snake_case_of_the_node_type() -> None:
    assert node_key(SklearnEstimator("LogisticRegression", 3, (0, 1))) == "sklearn_estimator"
    assert node_key(SparkPipeline("PipelineModel", 3, (0, 1))) == "spark_pipeline"


@pytest.mark.parametrize("target", ["coreml", "onnx", "pmml", "tfjs", "tflite"])
def test_every_target_refuses_an_unknown_node_by_name(target: str, lr: Any, churn_data: dict[str, Any]) -> None:
    ir = _SparkFrontend().lower(_SparkModel(lr), churn_data["holdout"])
    t = default_targets().get(target)
    reason = t.unsupported_reason(ir)
    assert reason is not None and "SparkPipeline" in reason and "PipelineModel" in reason
    with pytest.raises(CompileError) as info:
        t.build(ir, {"name": "churn-spark"})
    if target != "pmml":  # pmml refuses earlier: no sklearn-pipeline capability to convert
        assert isinstance(info.value, UnsupportedNodeError)
        assert (info.value.model, info.value.target, info.value.node) == ("churn-spark", target, "SparkPipeline")
    assert "SparkPipeline" in str(info.value) or "sklearn-pipeline" in str(info.value)


def test_a_new_frontend_is_one_register_call(lr: Any, churn_data: dict[str, Any], keypair: dict[str, Any]) -> None:
    frontends = default_frontends()
    frontends.register("fake-spark", _SparkFrontend())  # no target module is touched (the real "spark" one is registered)
    with pytest.raises(CompileError, match=r"target onnx cannot take model 'churn-spark': .*IR node SparkPipeline \(PipelineModel\)"):
        compile(_SparkModel(lr), churn_data["holdout"], targets=["onnx"], name="churn-spark",
                private_key=keypair["private"], frontends=frontends)


def test_sklearn_ir_exposes_the_pipeline_as_a_capability(lr: Any, churn_data: dict[str, Any]) -> None:
    ir = SklearnFrontend().lower(lr, churn_data["holdout"])
    assert isinstance(ir.estimator, SklearnEstimator)
    assert ir.has_capability("sklearn-pipeline") and ir.source_model("sklearn-pipeline") is lr
    with pytest.raises(MissingCapabilityError, match=r"no 'spark-pipeline' source model \(it exposes: sklearn-pipeline\)"):
        ir.source_model("spark-pipeline")
    again = SklearnFrontend().lower(lr, churn_data["holdout"])
    assert again == ir  # frozen nodes compare by value; the fitted objects are not compared


def test_pmml_asks_for_the_capability_and_says_when_it_is_absent(lr: Any, churn_data: dict[str, Any]) -> None:
    ir = SklearnFrontend().lower(lr, churn_data["holdout"])
    bare = dataclasses.replace(ir, capabilities=())
    pmml = default_targets().get("pmml")
    assert pmml.unsupported_reason(ir) is None
    reason = pmml.unsupported_reason(bare)
    assert reason is not None and "'sklearn-pipeline'" in reason and "LogisticRegression" in reason
    with pytest.raises(MissingCapabilityError, match="exposes: none"):
        pmml.build(bare, {"name": "churn"})


def test_targets_never_branch_on_framework_or_poke_the_fitted_model() -> None:
    from pathlib import Path

    import compiler.targets as targets

    root = Path(targets.__file__).parent
    for path in sorted(root.glob("*.py")):
        text = path.read_text()
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "ir.framework" not in code, path.name
        assert "ir.source" not in code.replace("ir.source_model(", ""), path.name
        assert "estimator.obj" not in code, path.name


def test_missing_tf2onnx_is_target_unavailable(tmp_path: Any) -> None:
    """The real compile path with tf2onnx unimportable (``sys.modules`` entry None) in a fresh interpreter."""
    import subprocess
    import sys

    script = """
import sys
sys.modules["tf2onnx"] = None  # import tf2onnx -> ImportError, as when the extra is not installed
import keras, numpy as np, pandas as pd
from compiler import TargetUnavailableError, compile
from compiler.frontends.keras import KerasModel
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
keras.utils.set_random_seed(0)
m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
sample = pd.DataFrame({"a": np.linspace(0, 1, 20), "b": np.linspace(1, 0, 20)})
try:
    compile(KerasModel(m, ["a", "b"]), sample, targets=["onnx"], name="k", private_key=Ed25519PrivateKey.generate())
except TargetUnavailableError as exc:
    print("UNAVAILABLE:", exc)
    sys.exit(0)
except Exception as exc:
    print("WRONG:", type(exc).__mro__, exc)
    sys.exit(2)
print("COMPILED")
sys.exit(3)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "UNAVAILABLE:" in proc.stdout and "tf2onnx" in proc.stdout and "edgefleet[tf]" in proc.stdout
