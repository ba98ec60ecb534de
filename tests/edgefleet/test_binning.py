"""The compiler's vectorised binning agrees with the one rule, edgefleet.protocol.bin_index."""

from __future__ import annotations

import math

import numpy as np

from compiler.reference import bin_counts
from edgefleet.protocol import bin_index

EDGES = [-1.0, 0.0, 0.5, 0.5000000001, 2.0]
VALUES = [-math.inf, -2.0, -1.0, -0.5, -0.0, 0.0, 0.25, 0.5, 0.5000000001, 1.0, 2.0, 3.0, math.inf]


def test_bin_index_edges_ties_signed_zero_inf() -> None:
    assert [bin_index(EDGES, v) for v in (-math.inf, -1.0, -0.0, 0.0, 2.0, math.inf)] == [0, 1, 2, 2, 5, 5]


def test_searchsorted_agrees_with_bin_index() -> None:
    ours = np.searchsorted(np.asarray(EDGES), np.asarray(VALUES), side="right").tolist()
    assert ours == [bin_index(EDGES, v) for v in VALUES]


def test_bin_counts_counts_by_bin_index() -> None:
    finite = [v for v in VALUES if math.isfinite(v)]
    counts, _missing = bin_counts(np.asarray(VALUES + [math.nan]), EDGES)
    want = [0] * (len(EDGES) + 1)
    for v in finite:
        want[bin_index(EDGES, v)] += 1
    assert counts == want
