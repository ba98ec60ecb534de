"""Histograms in the manifest's reference bins, and drift of one histogram against another.

A histogram has the shape of a device sketch body: ``{"n", "fields": {name: {"counts",
"missing", "unseen"}}, "score": {"counts"}}``, with the bins of docs/bundle-format.md
("Reference statistics"): numeric ``edges`` give ``len(edges) + 1`` bins
(``edgefleet.protocol.bin_index``, the one binning rule), categoricals one bin per manifest category. For drift, the
``missing`` count (and for categoricals ``unseen``) is appended as one more bin: a rise in
missing or unknown values is drift too. KS uses the numeric bins alone; chi2 is reported for
categoricals. Nothing here touches the database.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from edgefleet.protocol import bin_index
from fleet_server.monitoring import stats

Hist = dict[str, Any]  # {"n": int, "fields": {name: {"counts", "missing", "unseen"}}, "score": {"counts"}}


def fields_of(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(manifest["input_schema"]["fields"])


def empty_histogram(manifest: Mapping[str, Any]) -> Hist:
    ref = manifest["reference"]
    fields = {}
    for f in fields_of(manifest):
        size = len(f["categories"]) if f["type"] == "categorical" else len(ref["fields"][f["name"]]["edges"]) + 1
        fields[f["name"]] = {"counts": [0] * size, "missing": 0, "unseen": 0}
    return {"n": 0, "fields": fields, "score": {"counts": [0] * (len(ref["score"]["edges"]) + 1)}}


def reference_histogram(manifest: Mapping[str, Any]) -> Hist:
    """The manifest's reference statistics in the sketch body's shape."""
    ref = manifest["reference"]
    hist = empty_histogram(manifest)
    hist["n"] = int(ref["rows"])
    for name, entry in hist["fields"].items():
        stats_ = ref["fields"][name]
        entry.update(counts=list(stats_["counts"]), missing=int(stats_.get("missing", 0)), unseen=int(stats_.get("unseen", 0)))
    hist["score"] = {"counts": list(ref["score"]["counts"])}
    return hist


def add(into: Hist, body: Mapping[str, Any], sign: int = 1) -> bool:
    """Add a sketch body (or histogram) into ``into``; False, untouched, if its bins or types differ."""
    try:
        parts = [(into["fields"][n], body["fields"][n]) for n in into["fields"]]
        if any(len(a["counts"]) != len(b["counts"]) for a, b in parts) or len(into["score"]["counts"]) != len(body["score"]["counts"]):
            return False
        fields = [([int(y) for y in b["counts"]], int(b.get("missing", 0)), int(b.get("unseen", 0))) for _, b in parts]
        score = [int(y) for y in body["score"]["counts"]]
        n = int(body.get("n", sum(score)))
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    for (a, _), (counts, missing, unseen) in zip(parts, fields):
        a["counts"] = [x + sign * y for x, y in zip(a["counts"], counts)]
        a["missing"] += sign * missing
        a["unseen"] += sign * unseen
    into["score"]["counts"] = [x + sign * y for x, y in zip(into["score"]["counts"], score)]
    into["n"] += sign * n
    return True


def copy(hist: Hist) -> Hist:
    return {"n": hist["n"], "score": {"counts": list(hist["score"]["counts"])},
            "fields": {k: {"counts": list(v["counts"]), "missing": v["missing"], "unseen": v["unseen"]} for k, v in hist["fields"].items()}}


class RecordBinner:
    """Bins raw prediction features as the device's Sketch bins the encoded record.

    Missing (``None``/NaN) counts as ``missing``; a categorical value outside the manifest's
    categories as ``unseen``. Categories compare as JSON values, as in ``edgefleet.encoding``.
    """

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        ref = manifest["reference"]
        self.fields = fields_of(manifest)
        self.edges = [None if f["type"] == "categorical" else list(ref["fields"][f["name"]]["edges"]) for f in self.fields]
        self.index = [
            {json_key(c): i for i, c in enumerate(f["categories"]) if c is not None} if f["type"] == "categorical" else None
            for f in self.fields
        ]
        self.score_edges = list(ref["score"]["edges"])

    def locate(self, features: Mapping[str, Any], score: float) -> tuple[list[tuple[str, str, int]], int] | None:
        """The bins one record falls in; None for a value no device could have scored."""
        slots: list[tuple[str, str, int]] = []
        try:
            for f, edges, index in zip(self.fields, self.edges, self.index):
                raw = features.get(f["name"])
                if raw is None or (isinstance(raw, float) and math.isnan(raw)):
                    slots.append((f["name"], "missing", -1))
                elif index is not None:
                    i = index.get(json_key(raw))
                    slots.append((f["name"], "unseen", -1) if i is None else (f["name"], "counts", i))
                else:
                    slots.append((f["name"], "counts", bin_index(edges, float(raw))))  # type: ignore[arg-type]
            return slots, bin_index(self.score_edges, float(score))
        except (TypeError, ValueError):
            return None

    @staticmethod
    def count(hist: Hist, located: tuple[list[tuple[str, str, int]], int]) -> None:
        slots, score_bin = located
        for name, key, i in slots:
            if key == "counts":
                hist["fields"][name]["counts"][i] += 1
            else:
                hist["fields"][name][key] += 1
        hist["score"]["counts"][score_bin] += 1
        hist["n"] += 1


def json_key(value: Any) -> Any:
    """Categories compare as JSON values: 1 == 1.0, but "1" != 1 and True is not 1."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", float(value))
    return ("s", str(value)) if isinstance(value, str) else ("o", repr(value))


def compare(ref: Hist, cur: Hist, manifest: Mapping[str, Any], policy: stats.DriftPolicy, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Per-field and score drift of ``cur`` against ``ref`` (same bins), with one verdict."""
    skip = set(exclude)
    names = [f for f in fields_of(manifest) if f["name"] not in skip]
    n_tests = len(names) + 1
    out: dict[str, Any] = {"n_ref": ref["n"], "n": cur["n"], "fields": {}}
    for f in names:
        a, b = ref["fields"][f["name"]], cur["fields"][f["name"]]
        tail = ["unseen", "missing"] if f["type"] == "categorical" else ["missing"]
        rv = a["counts"] + [a[t] for t in tail]
        cv = b["counts"] + [b[t] for t in tail]
        res = stats.drift_decision(rv, cv, policy, n_tests=n_tests).as_dict()
        res["type"] = f["type"]
        res["missing_rate"] = b["missing"] / cur["n"] if cur["n"] else None
        if f["type"] == "categorical":
            res["chi2"] = stats.chi2(rv, cv)._asdict()
        elif sum(a["counts"]) and sum(b["counts"]):
            res["ks"] = stats.ks_binned(a["counts"], b["counts"])._asdict()
        out["fields"][f["name"]] = res
    score = stats.drift_decision(ref["score"]["counts"], cur["score"]["counts"], policy, n_tests=n_tests).as_dict()
    if sum(ref["score"]["counts"]) and sum(cur["score"]["counts"]):
        score["ks"] = stats.ks_binned(ref["score"]["counts"], cur["score"]["counts"])._asdict()
    out["score"] = score
    verdicts = [r["verdict"] for r in out["fields"].values()] + [score["verdict"]]
    out["drifting"] = [n for n, r in out["fields"].items() if r["verdict"] == "drift"] + (["<score>"] if score["verdict"] == "drift" else [])
    out["verdict"] = "drift" if out["drifting"] else ("insufficient_data" if "insufficient_data" in verdicts else "no_drift")
    return out


