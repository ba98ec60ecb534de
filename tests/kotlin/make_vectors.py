"""The TFLite input packing of the shared encoding vectors: ``tests/vectors/tflite.json``.

    python -m tests.kotlin.make_vectors      # rewrites tests/vectors/tflite.json from churn.json

``churn.json`` gives each encoding case's float64 rows. A TFLite artifact takes them as the
manifest's ``inputs[0].dtype`` says: ``float64`` (scikit-learn; TFLite bit-casts the doubles to
int64 keys, so a device that cannot build a float64 tensor hands over the IEEE-754 bit patterns
as int64) or ``float32`` (Keras). For every case with ``encoded`` rows this file holds both,
computed by numpy from ``edgefleet.encoding.encode_records``: ``int64`` (``view(np.int64)``; the
encoder's NaN is the canonical quiet NaN 0x7ff8000000000000) and ``float32`` (``astype``; NaN is
``null``). churn.json is not changed; tests/kotlin/test_vectors.py checks this file is current.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.encoding import encode_records
from tests.web.vectors import decode

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "vectors" / "churn.json"
OUT = ROOT / "tests" / "vectors" / "tflite.json"


def build(source: Path = SOURCE) -> dict[str, Any]:
    vectors = json.loads(source.read_text())
    cases = []
    for i, case in enumerate(vectors["encoding"]):
        if "encoded" not in case:
            continue
        enc = encode_records(vectors["schemas"][case["schema"]], decode(case["records"]))
        assert [[None if math.isnan(x) else x for x in row] for row in enc.tolist()] == case["encoded"], case["about"]
        f32 = enc.astype(np.float32)
        cases.append({"case": i, "about": case["about"], "int64": enc.view(np.int64).tolist(),
                      "float32": [[None if math.isnan(x) else x for x in row] for row in f32.astype(np.float64).tolist()]})
    return {"about": "TFLite input packing of churn.json's encoding cases; written by tests/kotlin/make_vectors.py, "
                     "read by runtimes/kotlin/test (case = index into churn.json's encoding list)",
            "source": "churn.json", "cases": cases}


def text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


def main() -> int:
    OUT.write_text(text(build()))
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
