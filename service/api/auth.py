"""Who is calling and where they may act: the token (bogv's `token` header or a Bearer token), its rights, and
the namespace a request acts in.

The tokens come from TOKENS_FILE (service.api.tokens), or the single TOKEN setting as one admin token.
Without either, the service is open as before: every caller acts as an admin, in the namespace its
request names (default ""). tokens.py's refusals become the error kinds of conf.errors here, at the
edge of the HTTP layer.
"""

from __future__ import annotations

from typing import Any

from flask import Request, g

from conf.errors import BadInput, Forbidden, StartupError, Unauthorized
from conf.settings import Settings
from service.api import tokens
from service.api.tokens import READ, WRITE, Grant, TokensFileError, TokenTable, authenticate, resolve_namespace
from service.store.filters import NamespaceError

# The right each endpoint needs (Flask endpoint names). Endpoints not listed (the OpenAPI document,
# unknown paths) need a known token but no particular right.
ENDPOINT_RIGHTS = {
    "api.search": READ, "api.search_id": READ, "api.get_keys": READ, "api.count": READ, "api.list_records": READ,
    "api.thumb": READ,
    "api.add": WRITE, "api.delete_ids": WRITE, "api.delete_keys": WRITE,
    "bulk.add_batch": WRITE, "bulk.set_key": WRITE,
}


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
    """Check the request's token and the right its endpoint needs; keep the grant for the route (flask.g)."""
    try:
        grant = authenticate(table, presented_token(request))
    except tokens.Unauthorized as exc:
        raise Unauthorized(exc.msg, reason=exc.reason) from None
    right = ENDPOINT_RIGHTS.get(request.endpoint or "")
    if right is not None and not grant.allows(right):
        raise Forbidden(f"this token does not have the {right} right this endpoint needs", reason="right_missing")
    g.grant = grant


def acting_namespace(body: dict[str, Any], right: str) -> str:
    """The namespace this request acts in: its token's, or (admin or open service) the `namespace` field."""
    grant: Grant = g.grant  # set by admit() before every route; missing would be a bug (500), never admin
    requested = body.get("namespace")
    try:
        return resolve_namespace(grant, requested, right)
    except tokens.Forbidden as exc:
        raise Forbidden(exc.msg, reason=exc.reason) from None
    except NamespaceError as exc:
        raise BadInput(f"field 'namespace': {exc}", reason="bad_namespace") from None
