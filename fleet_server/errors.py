"""Fleet server errors, each carrying the HTTP status the API answers with.

    FleetError (EdgefleetError)    root; ``status`` 400 unless a subclass says otherwise
    ├── NotFound                   404: no such model, version, device, rollout or artifact
    ├── Forbidden                  403: the caller's token does not cover this resource
    ├── Unauthorized               401: no or unknown token
    ├── Conflict                   409: a version that is not above the registered ones, a used token
    └── PayloadTooLarge            413: a body over its limit
"""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class FleetError(EdgefleetError):
    status = 400


class NotFound(FleetError):
    status = 404


class Forbidden(FleetError):
    status = 403


class Unauthorized(FleetError):
    status = 401


class Conflict(FleetError):
    status = 409


class PayloadTooLarge(FleetError):
    status = 413
