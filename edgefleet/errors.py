"""The exceptions edgefleet raises, one root per package.

    EdgefleetError                  root: the CLI prints these as one clear line
    ├── BundleError                 a bundle is unreadable, malformed or fails verification
    │   ├── VerificationError       signature, size or sha256 mismatch; wrong key; an unlisted file
    │   └── ManifestError           the manifest breaks its schema; ``field`` names the JSON path
    ├── KeyFileError                a key file is missing, unreadable or not Ed25519
    ├── InputError                  a record does not match the manifest's input schema
    └── CompileError                (compiler.errors) the compiler refuses a model or a target

Third-party errors (cryptography, onnx, Java) are translated where they enter, with
``raise ... from exc``, so callers catch one family and the message names what failed.
"""

from __future__ import annotations


class EdgefleetError(Exception):
    """Root of every error edgefleet raises on purpose."""


class BundleError(EdgefleetError):
    """A bundle is unreadable or malformed."""


class VerificationError(BundleError):
    """A bundle failed verification: signature, artifact size or sha256, or the key."""


class ManifestError(BundleError):
    """A manifest does not match the bundle manifest schema. ``field`` is the JSON path."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class KeyFileError(EdgefleetError):
    """A key file is missing, unreadable or not an Ed25519 key."""


class InputError(EdgefleetError, ValueError):
    """A record does not match the input schema. ``field`` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field {field!r}: {reason}")
        self.field = field
        self.reason = reason
