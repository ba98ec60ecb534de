"""The one HTTP client: JSON (or bytes) over urllib, errors as one line naming the call and reason.

The CLI, the retraining job and anything else that talks to a fleet server's HTTP API use
:class:`HttpClient`. Callers pass the error class to raise, so a failure surfaces as their own
package's error (``ServerError`` in the CLI, ``RetrainError`` in the retraining job).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from edgefleet.errors import EdgefleetError


class HttpError(EdgefleetError):
    """An HTTP call failed: the server answered with an error, or could not be reached."""


class HttpClient:
    """A fleet server's HTTP API: JSON in and out, errors as one line naming the call and reason."""

    def __init__(self, server: str, token: str | None, *, error: type[Exception] = HttpError, timeout: float = 120.0) -> None:
        self.server, self.token, self.error, self.timeout = server.rstrip("/"), token, error, timeout

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None, as_bytes: bool = False) -> Any:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/x-tar" if raw is not None else "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error")
            except (ValueError, AttributeError):
                msg = exc.reason
            raise self.error(f"{method} {path}: HTTP {exc.code}: {msg}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise self.error(f"cannot reach the fleet server at {self.server}: {reason}") from None
        if as_bytes:
            return text
        return json.loads(text) if text else None
