"""The verified manifest: a read-only, typed view that only signature verification can make.

An unverified ``dict`` and a verified manifest look alike, and passing the first where the
second is needed is how an unsigned bundle gets scored. :class:`VerifiedManifest` makes the
difference a type: :func:`edgefleet.bundle_format.verify` is the only public way to obtain one
(the compiler gets one by verifying the bundle it has just signed), the constructor refuses
callers without the module's private token, and the scorer refuses anything else. It is a
read-only ``dict``, so code that reads ``manifest["output"]["threshold"]`` keeps working; the typed
properties cover the lookups every consumer makes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NoReturn

__all__ = ["VerifiedManifest"]

_TOKEN = object()


class VerifiedManifest(dict[str, Any]):
    """A manifest whose signature, format, schema and artifact hashes were checked.

    A read-only ``dict`` (so JSON encoders and schema validators take it as is): the top level
    refuses changes; ``to_dict()`` gives a mutable deep copy, and so do ``copy``/``deepcopy``
    and pickling, which never yield something that claims to be verified.
    """

    __slots__ = ()

    def __init__(self, data: Mapping[str, Any], *, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("a VerifiedManifest comes from edgefleet.bundle_format.verify(); an unverified manifest cannot be wrapped")
        super().__init__(copy.deepcopy(dict(data)))

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a VerifiedManifest is read-only; change a copy from to_dict() and sign it again")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = __ior__ = _refuse

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))

    def __repr__(self) -> str:
        return f"VerifiedManifest({self.name!r} v{self.version})"

    @property
    def name(self) -> str:
        return str(self["name"])

    @property
    def version(self) -> int:
        return int(self["version"])

    @property
    def key_id(self) -> str:
        return str(self["key_id"])

    @property
    def fields(self) -> list[dict[str, Any]]:
        return list(self["input_schema"]["fields"])

    @property
    def classes(self) -> list[Any]:
        return list(self["output"]["classes"])

    @property
    def threshold(self) -> float:
        return float(self["output"]["threshold"])

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return list(self["artifacts"])

    @property
    def formats(self) -> list[str]:
        return [str(a["format"]) for a in self["artifacts"]]

    def to_dict(self) -> dict[str, Any]:
        """A mutable deep copy (e.g. to re-sign a derived manifest)."""
        return copy.deepcopy(dict(self))


def _issue(data: Mapping[str, Any]) -> VerifiedManifest:
    """For :func:`edgefleet.bundle_format.verify` only, after every check passed."""
    return VerifiedManifest(data, _token=_TOKEN)
