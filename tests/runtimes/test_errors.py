"""The error tree drawn in runtimes/python/errors.py's docstring is the real class hierarchy."""

from __future__ import annotations

import inspect
import re

import pytest

from edgefleet.errors import EdgefleetError, InputError
from runtimes.python import errors
from runtimes.python.errors import DeviceError, ScoringInputError


def _drawn_tree() -> list[tuple[str, str]]:
    """(child, parent) pairs as drawn: a name's parent is the nearest line above it one level up."""
    stack: list[tuple[int, str]] = []
    pairs: list[tuple[str, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^[\s│]*(?:[├└]── )?([A-Z]\w+Error)\b", line)
        if not m:
            continue
        depth = m.start(1) // 4  # the tree indents each level by four columns
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            pairs.append((m.group(1), stack[-1][1]))
        stack.append((depth, m.group(1)))
    return pairs


def test_the_docstring_draws_every_error_class() -> None:
    drawn = {c for pair in _drawn_tree() for c in pair}
    defined = {n for n, obj in vars(errors).items() if inspect.isclass(obj) and obj.__module__ == errors.__name__}
    assert drawn == defined


@pytest.mark.parametrize("child,parent", _drawn_tree())
def test_each_drawn_edge_is_a_subclass(child: str, parent: str) -> None:
    assert issubclass(getattr(errors, child), getattr(errors, parent))


def test_scoring_input_error_is_a_device_error_and_keeps_the_input_error_fields() -> None:
    assert issubclass(DeviceError, EdgefleetError)
    exc = ScoringInputError("tenure", "not a number")
    assert isinstance(exc, DeviceError) and isinstance(exc, InputError) and isinstance(exc, ValueError)
    assert (exc.field, exc.reason, str(exc)) == ("tenure", "not a number", "field 'tenure': not a number")
    with pytest.raises(DeviceError):
        raise exc
