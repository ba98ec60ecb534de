"""Sample checks shared by the frontends: a data error in the sample is reported as one, with its row.

A column the model reads as numbers that pandas read as text is nearly always a few bad cells
("forty" among "40", "12", ...): that is a data error in a named row, not an unsupported
pipeline step. A column where most cells are text is a string column, and the caller's own
message (encode it first) stands.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def not_a_number(sample: Any, name: str, kind: str = "a number") -> str | None:
    """``"sample row N, field 'x': 'forty' is not a number"`` for the first bad cell of a mostly numeric column, else None.

    Rows count from 1 over the sample's data rows (in a CSV, row N is line N + 1, after the header).
    """
    import pandas as pd

    col = sample[name]
    if col.dtype.kind in "biuf":
        return None
    present = col.notna().to_numpy()
    if not present.any():
        return None
    text = col[present].astype(str).str.strip()
    parsed = pd.to_numeric(text, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.all() or bad.sum() * 2 > len(bad):  # mostly text: a string column, not a few bad cells
        return None
    position = int(np.flatnonzero(present)[int(np.argmax(bad))])
    return f"sample row {position + 1}, field {name!r}: {text.iloc[int(np.argmax(bad))]!r} is not {kind}"
