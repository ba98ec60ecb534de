"""Fixtures shared by the compiler's TF-based target tests (TFLite, TF.js, CoreML)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgefleet_cli.samples.telco_churn import LABEL, NUMERIC


@pytest.fixture(scope="session")
def keras_model(churn_data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    import keras

    from compiler.frontends.keras import KerasModel

    tr = churn_data["train"].dropna(subset=NUMERIC)
    X = tr[NUMERIC].to_numpy(np.float32)
    y = tr[LABEL].to_numpy().astype(np.float32)
    keras.utils.set_random_seed(0)
    norm = keras.layers.Normalization()
    norm.adapt(X)
    m = keras.Sequential([keras.Input((len(NUMERIC),)), norm, keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dropout(0.2), keras.layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy")
    m.fit(X, y, epochs=3, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("keras") / "churn.keras"
    m.save(path)
    return KerasModel.load(path, NUMERIC, classes=[0, 1])
