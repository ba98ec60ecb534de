"""Request authentication: the admin token for admin routes, device tokens for device routes, and
read-only API keys of one kind (``scores:read``) for the call-centre score lookup."""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Any, Callable

from flask import current_app, g, request

from fleet_server.core import Fleet
from fleet_server.db import ApiKey
from fleet_server.devices import authenticate_id
from fleet_server.errors import Forbidden, Unauthorized


def fleet() -> Fleet:
    app_fleet: Fleet = current_app.extensions["edgefleet"]
    return app_fleet


def bearer() -> str | None:
    h = request.headers.get("Authorization", "")
    return h[7:].strip() if h.lower().startswith("bearer ") else None


def is_admin() -> bool:
    tok = bearer()
    # bytes, not str: compare_digest refuses non-ASCII str, and a header is the caller's to choose
    return tok is not None and hmac.compare_digest(tok.encode("utf-8", "surrogateescape"), fleet().secrets.admin_token.encode())


def admin_required(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        if bearer() is None:
            raise Unauthorized("authorization: this endpoint needs 'Authorization: Bearer <admin token>'")
        if not is_admin():
            raise Forbidden("authorization: not the admin token")
        return fn(*a, **kw)

    return wrapper


def device_required(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The caller is the device named in the URL (or, for artifacts, any device), or the admin."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        if is_admin():
            g.device_id = None
            return fn(*a, **kw)
        device_id = authenticate_id(fleet(), bearer())  # the id only: one indexed query, nothing cached
        wanted = kw.get("device_id")
        if wanted is not None and wanted != device_id:
            raise Forbidden(f"device: token of {device_id} cannot access {wanted}")
        g.device_id = device_id
        return fn(*a, **kw)

    return wrapper


def key_required(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The admin token, or an unrevoked API key of ``kind`` (minted by the admin: POST /api/v1/api-keys)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            tok = bearer()
            if tok is None:
                raise Unauthorized(f"authorization: this endpoint needs 'Authorization: Bearer <{kind} API key>'")
            if not is_admin():
                digest = hashlib.sha256(tok.encode("utf-8", "surrogateescape")).hexdigest()
                with fleet().session() as s:
                    key = s.get(ApiKey, digest)
                    if key is None or key.revoked_at is not None:
                        raise Forbidden(f"authorization: not a valid {kind} API key")
                    if key.kind != kind:
                        raise Forbidden(f"authorization: a {key.kind} API key cannot call this endpoint (it needs {kind})")
            return fn(*a, **kw)

        return wrapper

    return decorate
