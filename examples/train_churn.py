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

from edgefleet_cli.samples.telco_churn import CATEGORICAL, LABEL, MODELS, NUMERIC, make_pipeline, make_telco_churn  # noqa: E402


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
