"""Synthetic telco-churn data, shaped like the public IBM Telco Customer Churn set.

Nothing is downloaded: the generator draws customers from a seeded RNG and gives churn a
realistic dependence on contract, tenure, charges and services, so that models reach an
AUROC of about 0.8 and tree models meet exact-tie and large-magnitude features (TotalCharges
reaches ~8.6k) that expose float32/double parity bugs. ``shift`` moves the population for
drift experiments (price rise, network outage) without changing the schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

CATEGORICAL = [
    "gender", "Partner", "Dependents", "PhoneService", "MultipleLines", "InternetService",
    "OnlineSecurity", "TechSupport", "StreamingTV", "Contract", "PaperlessBilling",
    "PaymentMethod",
]
NUMERIC = ["SeniorCitizen", "tenure", "MonthlyCharges", "TotalCharges"]
LABEL = "Churn"


def make_telco_churn(
    n: int = 5000,
    seed: int = 0,
    *,
    missing_rate: float = 0.02,
    price_shift: float = 0.0,
    outage: float = 0.0,
) -> "pd.DataFrame":
    """Return ``n`` customers with string categoricals, some missing numerics and a 0/1 label.

    ``price_shift`` adds that fraction to MonthlyCharges (0.15 = 15% price rise);
    ``outage`` adds that much to the churn log-odds of fiber customers.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)

    def pick(choices: list[str], p: list[float]) -> np.ndarray:
        return rng.choice(np.array(choices, dtype=object), size=n, p=p)

    gender = pick(["Female", "Male"], [0.5, 0.5])
    senior = (rng.random(n) < 0.16).astype(np.int64)
    partner = pick(["Yes", "No"], [0.48, 0.52])
    dependents = np.where(
        partner == "Yes", pick(["Yes", "No"], [0.5, 0.5]), pick(["Yes", "No"], [0.1, 0.9])
    )
    contract = pick(["Month-to-month", "One year", "Two year"], [0.55, 0.21, 0.24])
    max_tenure = np.select([contract == "Two year", contract == "One year"], [72, 60], 40)
    tenure = np.minimum(rng.integers(0, 73, n), max_tenure + rng.integers(0, 33, n)).clip(0, 72)
    phone = pick(["Yes", "No"], [0.9, 0.1])
    multi = np.where(phone == "Yes", pick(["Yes", "No"], [0.47, 0.53]), "No phone service")
    internet = pick(["Fiber optic", "DSL", "No"], [0.44, 0.34, 0.22])

    def addon(p_yes: float) -> np.ndarray:
        return np.where(internet == "No", "No internet service", pick(["Yes", "No"], [p_yes, 1 - p_yes]))

    security, support, tv = addon(0.35), addon(0.35), addon(0.45)
    paperless = pick(["Yes", "No"], [0.59, 0.41])
    payment = pick(
        ["Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"],
        [0.34, 0.23, 0.22, 0.21],
    )

    base = np.select([internet == "Fiber optic", internet == "DSL"], [70.0, 45.0], 20.0)
    monthly = (
        base + 5.0 * (phone == "Yes") + 5.0 * (multi == "Yes") + 5.0 * (security == "Yes")
        + 5.0 * (support == "Yes") + 10.0 * (tv == "Yes") + rng.normal(0, 3.0, n)
    ).clip(18.0, 120.0) * (1.0 + price_shift)
    monthly = np.round(monthly, 2)
    total = np.round(monthly * tenure * rng.uniform(0.95, 1.05, n), 2)

    logit = (
        -1.2
        + 1.3 * (contract == "Month-to-month") - 1.2 * (contract == "Two year")
        - 0.035 * tenure + 0.018 * (monthly - 65.0)
        + 0.55 * (internet == "Fiber optic") * (1.0 + outage)
        + 0.45 * (payment == "Electronic check") + 0.3 * (paperless == "Yes")
        - 0.4 * (security == "Yes") - 0.35 * (support == "Yes")
        + 0.3 * senior - 0.2 * (partner == "Yes") - 0.15 * (dependents == "Yes")
        + 8.0 * price_shift
    )
    churn = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    df = pd.DataFrame({
        "customerID": [f"C{seed:03d}-{i:06d}" for i in range(n)],
        "gender": gender, "SeniorCitizen": senior, "Partner": partner,
        "Dependents": dependents, "tenure": tenure.astype(np.int64),
        "PhoneService": phone, "MultipleLines": multi, "InternetService": internet,
        "OnlineSecurity": security, "TechSupport": support, "StreamingTV": tv,
        "Contract": contract, "PaperlessBilling": paperless, "PaymentMethod": payment,
        "MonthlyCharges": monthly, "TotalCharges": total, LABEL: churn,
    })
    # Like the public data set, new customers sometimes have no TotalCharges yet.
    for col in ("TotalCharges", "MonthlyCharges"):
        df.loc[rng.random(n) < missing_rate, col] = np.nan
    for col in CATEGORICAL:
        df[col] = df[col].astype(object)
    return df


MODELS = ("lr", "dt", "rf", "et", "gb", "hgb", "mlp")


def make_pipeline(kind: str = "rf", seed: int = 0) -> Any:
    """An unfitted scikit-learn Pipeline for this data: one-hot categoricals, imputed and scaled numerics, a classifier."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    makers: dict[str, Callable[[], Any]] = {
        "lr": lambda: LogisticRegression(max_iter=2000),
        "dt": lambda: DecisionTreeClassifier(max_depth=8, random_state=seed),
        "rf": lambda: RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1),
        "et": lambda: ExtraTreesClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1),
        "gb": lambda: GradientBoostingClassifier(random_state=seed),
        "hgb": lambda: HistGradientBoostingClassifier(random_state=seed),
        "mlp": lambda: MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=400, random_state=seed),
    }
    if kind not in makers:
        raise ValueError(f"model kind {kind!r}: expected one of {', '.join(MODELS)}")
    pre = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), NUMERIC),
    ])
    return Pipeline([("pre", pre), ("clf", makers[kind]())])


# Trainers for ``edgefleet retrain --trainer edgefleet_cli.samples.telco_churn:fit_rf``: train_df holds the input
# fields and the label (reference data plus labeled telemetry); each returns a fitted estimator.
def fit_rf(train_df: "pd.DataFrame") -> Any:
    return make_pipeline("rf").fit(train_df[CATEGORICAL + NUMERIC], train_df[LABEL].astype(int))


def fit_lr(train_df: "pd.DataFrame") -> Any:
    return make_pipeline("lr").fit(train_df[CATEGORICAL + NUMERIC], train_df[LABEL].astype(int))
