"""What a compile prints: edgefleet's own lines, not TensorFlow's, absl's or onnx's.

TensorFlow, LiteRT and absl write straight to file descriptor 2 from C++ ("oneDNN custom
operations are on", "Created TensorFlow Lite XNNPACK delegate", "All log messages before
absl::InitializeLog()"), some from child processes, so quieting Python loggers is not enough.
``third_party_output()`` therefore points fd 2 at a temp file for the duration and hands the
caller a stream on the real stderr for the progress display; Python warnings and the
third-party loggers are quieted too. ``verbose=True`` changes nothing. If the compile fails with
an unexpected exception (a bug, not an ``EdgefleetError``), the captured tail is replayed, since
it may hold the cause.

``parity_line`` formats a parity record for people: ``max |dp| 3.1e-07 (tol 1e-05)``.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

from edgefleet.errors import EdgefleetError

NOISY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "onnx", "keras", "h5py", "coremltools", "jax")
REPLAYED_LINES = 40


@contextmanager
def third_party_output(verbose: bool = False) -> Iterator[TextIO]:
    """Yield the stream to print progress on; unless ``verbose``, everything else written to stderr is held back."""
    if verbose:
        yield sys.stderr
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read when TF first loads: keeps most of its C++ logging off
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    real = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    failed: BaseException | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield real
    except BaseException as exc:
        failed = exc
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if failed is not None and not isinstance(failed, (EdgefleetError, KeyboardInterrupt)):
            held.seek(0)
            tail = held.read().decode("utf-8", "replace").splitlines()[-REPLAYED_LINES:]
            if tail:
                real.write("third-party output held back during the compile (last lines; --verbose shows it all):\n" + "\n".join(tail) + "\n")
        real.close()
        held.close()


def number(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.2g}"


def parity_line(rep: dict[str, Any]) -> str:
    """``onnx: onnxruntime 1.32.0, max |dp| 3.1e-07 (tol 1e-05), label agreement 1.0000``."""
    agree = rep.get("label_agreement")
    text = f"max |dp| {number(rep.get('max_abs_diff'))} (tol {float(rep['tolerance']):g})"
    if agree is not None:
        text += f", label agreement {float(agree):.4f}"
    if rep.get("error"):
        text += f", {rep['error']}"
    return text
