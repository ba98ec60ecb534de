"""The one HTTP client: JSON (or bytes) over urllib, errors as one line naming the call and reason.

The CLI, the retraining job and anything else that talks to a fleet server's HTTP API use
:class:`HttpClient`. Callers pass the error class to raise, so a failure surfaces as their own
package's error (``ServerError`` in the CLI, ``RetrainError`` in the retraining job).
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgefleet.errors import EdgefleetError


class HttpError(EdgefleetError):
    """An HTTP call failed: the server answered with an error, or could not be reached."""


@dataclass(frozen=True)
class HttpResponse:
    """A whole reply: status, headers and body, for callers that need more than the JSON (ETags, 304)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def _fail(error: type[Exception], message: str, status: int | None = None) -> Exception:
    exc = error(message)
    exc.status = status  # type: ignore[attr-defined]  # read by callers that retry on some statuses
    return exc


class HttpClient:
    """A fleet server's HTTP API: JSON in and out, errors as one line naming the call and reason."""

    def __init__(self, server: str, token: str | None, *, error: type[Exception] = HttpError, timeout: float = 120.0) -> None:
        self.server, self.token, self.error, self.timeout = server.rstrip("/"), token, error, timeout

    def _request(self, method: str, path: str, body: Any, raw: bytes | None, headers: dict[str, str] | None) -> urllib.request.Request:
        data = raw if raw is not None else (None if body is None else json.dumps(body, separators=(",", ":")).encode())
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/x-tar" if raw is not None else "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        return req

    def exchange(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                 headers: dict[str, str] | None = None) -> HttpResponse:
        """One call; a 2xx or 304 comes back as an :class:`HttpResponse`, anything else raises ``self.error``
        (with ``.status`` set to the HTTP status, or ``None`` when the server could not be reached)."""
        req = self._request(method, path, body, raw, headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return HttpResponse(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return HttpResponse(304, dict(exc.headers.items()) if exc.headers else {}, b"")
            try:
                msg = json.loads(exc.read()).get("error")
            except (ValueError, AttributeError, OSError, http.client.HTTPException):
                msg = exc.reason
            raise _fail(self.error, f"{method} {path}: HTTP {exc.code}: {msg}", exc.code) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise _fail(self.error, f"cannot reach the fleet server at {self.server}: {reason}") from None

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None, as_bytes: bool = False) -> Any:
        """JSON (or bytes with ``as_bytes``) of a 2xx reply; a reply that is not JSON raises ``self.error``."""
        resp = self.exchange(method, path, body, raw, headers)
        if as_bytes:
            return resp.body
        try:
            return resp.json()
        except ValueError:
            raise _fail(self.error, f"{method} {path}: the server's reply is not JSON (a garbled reply: worth a retry)") from None
