"""A TFLite interpreter for the Kotlin tests: the Scorer a phone backs with LiteRT's Interpreter.

The JVM has no LiteRT here, so the Kotlin test's Scorer sends each request to this process:
one JSON line ``{"model": PATH, "input": PATH, "dtype": "float64"|"float32", "rows": N, "cols": F}``
on stdin, where ``input`` holds the tensor bytes exactly as ``TensorInput.toByteBuffer()`` laid
them out (native order; float64 as the doubles' int64 bit patterns). It answers one JSON line
``{"probabilities": [[...], ...]}`` or ``{"error": "..."}``, running ai-edge-litert's Interpreter on the file.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def main() -> int:
    from ai_edge_litert.interpreter import Interpreter

    cache: dict[tuple[str, float], Any] = {}
    for line in sys.stdin:
        try:
            req = json.loads(line)
            key = (req["model"], os.stat(req["model"]).st_mtime)
            if key not in cache:
                cache[key] = Interpreter(model_path=req["model"])
            it = cache[key]
            raw = np.fromfile(req["input"], dtype=np.int64 if req["dtype"] == "float64" else np.float32)
            x = (raw.view(np.float64) if req["dtype"] == "float64" else raw).reshape(req["rows"], req["cols"])
            inp = it.get_input_details()[0]
            it.resize_tensor_input(inp["index"], list(x.shape))
            it.allocate_tensors()
            it.set_tensor(inp["index"], x)
            it.invoke()
            out = it.get_tensor(it.get_output_details()[0]["index"]).astype(np.float64)
            reply: dict[str, Any] = {"probabilities": out.tolist()}
        except Exception as exc:  # noqa: BLE001 - any failure is the answer to this request
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
