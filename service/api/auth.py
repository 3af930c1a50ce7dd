"""The optional token check (bogv's `token` header, or `Authorization: Bearer ...`)."""

from __future__ import annotations

import hmac

from flask import Request

from conf.errors import Unauthorized


def presented_token(request: Request) -> str | None:
    """The token the client sent, from the `token` header or a Bearer Authorization header."""
    token = request.headers.get("token")
    if token:
        return token.strip()
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def check_token(request: Request, expected: str) -> None:
    """Raise Unauthorized unless the request carries `expected`; the comparison takes constant time."""
    given = presented_token(request)
    if given is None:
        raise Unauthorized("missing token: send it in the 'token' header or as 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        raise Unauthorized("invalid token")
