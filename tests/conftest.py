"""Shared fixtures: synthetic churn data, trained pipelines, a key pair, compiled bundles.

Pipelines are trained once per session; compiled bundles once per (family, target set). Every
artifact is scored by its real runtime (onnxruntime, pypmml on a real JVM): nothing is mocked.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from edgefleet import keys  # noqa: E402
from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn  # noqa: E402

FAMILIES = ["lr", "dt", "rf", "et", "gb", "hgb", "mlp"]
TARGETS = ["onnx", "pmml"]


@pytest.fixture(scope="session")
def churn_data() -> dict[str, Any]:
    df = make_telco_churn(4000, seed=1)
    return {"train": df.iloc[:2800].reset_index(drop=True), "holdout": df.iloc[2800:].reset_index(drop=True)}


@pytest.fixture(scope="session")
def fresh_data() -> Any:
    """Data no compile ever saw, with a shifted population, for independent re-scoring."""
    return make_telco_churn(600, seed=99, price_shift=0.1, missing_rate=0.05)


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("keys")
    priv, pub = keys.generate_keypair(d)
    return {"dir": d, "private_path": priv, "public_path": pub, "private": keys.load_private_key(priv), "public": keys.load_public_key(pub)}


_models: dict[str, Any] = {}


@pytest.fixture(scope="session")
def train_model(churn_data: dict[str, Any]) -> Any:
    from train_churn import make_pipeline

    def train(family: str) -> Any:
        if family not in _models:
            tr = churn_data["train"]
            _models[family] = make_pipeline(family).fit(tr[CATEGORICAL + NUMERIC], tr[LABEL])
        return _models[family]

    return train


_bundles: dict[str, Any] = {}


@pytest.fixture(scope="session")
def compiled(train_model: Any, churn_data: dict[str, Any], keypair: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """compiled(family) -> CompileResult for targets onnx+pmml, written to a temp folder."""
    from compiler import compile

    def get(family: str) -> Any:
        if family not in _bundles:
            out = tmp_path_factory.mktemp(f"bundle_{family}") / f"churn-{family}"
            _bundles[family] = compile(
                train_model(family), churn_data["holdout"], targets=TARGETS, name=f"churn-{family}",
                version=1, private_key=keypair["private"], label=LABEL, out_dir=out,
            )
        return _bundles[family]

    return get


@pytest.fixture(scope="session")
def spark() -> Any:
    """The shared local[2] SparkSession (tests/support/spark.py); created on first use only."""
    from tests.support.spark import session_fixture

    yield from session_fixture()


@pytest.fixture()
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something already listens on (for the "port in use" errors)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()
