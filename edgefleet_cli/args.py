"""argparse pieces that keep an operator's mistake to one line naming the option and the reason.

``type=`` functions raise :class:`argparse.ArgumentTypeError`, which argparse reports as
``edgefleet VERB: error: argument --OPT: <reason>``; :class:`OneLineParser` prints that line
alone (no usage block), exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (``--help`` still shows usage)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (an integer 0..65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is out of range: a port must be 0..65535 (0 picks a free one)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value < 2**53:
        raise argparse.ArgumentTypeError(f"{value} is out of range: must be a positive integer below 2**53")
    return value


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    """A finite float in [lo, hi] (``lo_open``: lo excluded)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {'above' if lo_open else 'at least'} {lo:g}"
                                             + (f" and at most {hi:g}" if hi is not None else ""))
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be at most {hi:g}")
        return value

    return parse


def percentages(text: str) -> list[float]:
    """Rollout steps: comma-separated rising percentages in (0, 100], ending at 100."""
    items = [x.strip() for x in text.split(",")]
    if not text.strip() or any(not x for x in items):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated percentages, e.g. 10,50,100")
    if len(items) > 20:
        raise argparse.ArgumentTypeError(f"{len(items)} steps: at most 20")
    out: list[float] = []
    for x in items:
        try:
            v = float(x)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{x!r} is not a number (in {text!r})") from None
        if not math.isfinite(v) or not 0 < v <= 100:
            raise argparse.ArgumentTypeError(f"{x!r} is out of range: each step is a percentage above 0 and at most 100")
        if out and v < out[-1]:
            raise argparse.ArgumentTypeError(f"{text!r}: steps must rise ({x} after {out[-1]:g})")
        out.append(v)
    if out[-1] != 100:
        raise argparse.ArgumentTypeError(f"{text!r}: the last step must be 100")
    return out


def names(text: str) -> list[str]:
    """A comma-separated list of non-empty names (groups, tags)."""
    items = [x.strip() for x in text.split(",")]
    if any(not x for x in items):
        raise argparse.ArgumentTypeError(f"{text!r}: an empty name in the comma-separated list")
    return items


def _url(text: str, schemes: tuple[str, ...], example: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of 0..65535 or not a number
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {' or '.join(s + '://' for s in schemes)} URL, e.g. {example}")
    return text


def http_url(text: str) -> str:
    return _url(text, ("http", "https"), "http://127.0.0.1:8080")


def mqtt_url(text: str) -> str:
    return _url(text, ("mqtt", "mqtts", "tcp"), "mqtt://127.0.0.1:1883")


# --- paths: resolved against the caller's working directory when the command line is parsed -------------
# A relative path kept as given is resolved later against whatever folder the code then runs in
# (Flask resolves a relative send_file path against the package folder): make it absolute up front.

def path(text: str) -> str:
    """Any file or folder path, made absolute against the cwd (``~`` expanded); existence is checked by its user."""
    if not text or not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"{text!r}: a path cannot contain a NUL character")
    return str(Path(text).expanduser().resolve())


def writable_output_path(text: str) -> str:
    """A file to (over)write: absolute, not a folder, its folder exists and is writable."""
    out = Path(path(text))
    if out.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder: give a file name in it, e.g. {out / 'scores.jsonl'}")
    parent = out.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: the folder {parent} does not exist" if not parent.exists()
                                         else f"{text!r}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text!r}: permission denied (cannot write in {parent})")
    return str(out)


def model_name(text: str) -> str:
    """A model name as the bundle manifest's schema allows it (the schema is the single source of the rule)."""
    pattern = manifest_name_pattern()
    if not re.fullmatch(pattern.strip("^$"), text, re.ASCII):
        raise argparse.ArgumentTypeError(f"{text!r} is not a model name: it must match {pattern}, e.g. churn or churn-eu.v2")
    return text


def manifest_name_pattern() -> str:
    from edgefleet.manifest_schema import schema

    return str(schema()["properties"]["name"]["pattern"])
