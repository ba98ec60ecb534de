"""Generate synthetic telco-churn data and train a churn pipeline, as a data scientist would.

    python examples/train_churn.py --model rf --out demo-out

writes ``train.csv``, ``holdout.csv`` (the compile sample: string categoricals, some missing
numerics, a ``Churn`` label) and ``churn_<model>.joblib``, a fitted scikit-learn Pipeline of
OneHotEncoder + SimpleImputer + StandardScaler + the chosen classifier.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, NUMERIC, make_telco_churn  # noqa: E402

MODELS = ("lr", "dt", "rf", "et", "gb", "hgb", "mlp")


def make_pipeline(kind: str, seed: int = 0):  # type: ignore[no-untyped-def]
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

    clf = {
        "lr": lambda: LogisticRegression(max_iter=2000),
        "dt": lambda: DecisionTreeClassifier(max_depth=8, random_state=seed),
        "rf": lambda: RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1),
        "et": lambda: ExtraTreesClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed, n_jobs=1),
        "gb": lambda: GradientBoostingClassifier(random_state=seed),
        "hgb": lambda: HistGradientBoostingClassifier(random_state=seed),
        "mlp": lambda: MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=400, random_state=seed),
    }[kind]()
    pre = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), NUMERIC),
    ])
    return Pipeline([("pre", pre), ("clf", clf)])


def main() -> None:
    import joblib

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=MODELS, default="rf")
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="demo-out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df = make_telco_churn(args.rows, seed=args.seed)
    split = int(len(df) * 0.7)
    train, holdout = df.iloc[:split], df.iloc[split:]
    train.to_csv(out / "train.csv", index=False)
    holdout.to_csv(out / "holdout.csv", index=False)
    pipe = make_pipeline(args.model, args.seed).fit(train[CATEGORICAL + NUMERIC], train[LABEL])
    path = out / f"churn_{args.model}.joblib"
    joblib.dump(pipe, path)
    print(f"trained {type(pipe.steps[-1][1]).__name__} on {len(train)} rows -> {path}; compile sample: {out / 'holdout.csv'} ({len(holdout)} rows)")


if __name__ == "__main__":
    main()
