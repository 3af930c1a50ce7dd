"""Who is calling and what they may do: the token (bogv's `token` header or a Bearer token) and the right the
endpoint declares (service.api.endpoint), checked once per request before the route runs. The namespace a
request acts in is resolved with the body (service.api.endpoint.acting_namespace).

The tokens come from TOKENS_FILE (service.api.tokens), or the single TOKEN setting as one admin token.
Without either, the service is open as before: every caller acts as an admin, in the namespace its
request names (default ""). tokens.py's refusals become the error kinds of conf.errors here, at the
edge of the HTTP layer.
"""

from __future__ import annotations

from flask import Request, current_app, g

from conf.errors import Forbidden, StartupError, Unauthorized
from conf.settings import Settings
from service.api import tokens
from service.api.endpoint import endpoint_of
from service.api.tokens import TokensFileError, TokenTable, authenticate


def token_table(settings: Settings) -> TokenTable | None:
    """The tokens in force: TOKENS_FILE, else TOKEN as one admin token, else None (open service)."""
    if settings.tokens_file is not None:
        try:
            return TokenTable.from_file(settings.tokens_file)
        except TokensFileError as exc:
            raise StartupError(f"TOKENS_FILE {exc}") from None
    if settings.token is not None:
        return TokenTable.single_admin(settings.token.get_secret_value())
    return None


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


def admit(request: Request, table: TokenTable | None) -> None:
    """Check the request's token and the right its endpoint declares with @endpoint (none declared: any known
    token); keep the grant for the route (flask.g). The only check of the right in a request."""
    try:
        grant = authenticate(table, presented_token(request))
    except tokens.Unauthorized as exc:
        raise Unauthorized(exc.msg, reason=exc.reason) from None
    spec = endpoint_of(current_app, request.endpoint)
    right = spec.right if spec is not None else None
    if right is not None and not grant.allows(right):
        raise Forbidden(f"this token does not have the {right} right this endpoint needs", reason="right_missing")
    g.grant = grant
