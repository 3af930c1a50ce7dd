"""Declaring an endpoint: its route, the right it needs, its body model and its answers, in one place.

    @endpoint(api, "/search/id", right=READ, body=SearchByIdBody, ok=SEARCH_OK, tag="search")
    def search_id(body: SearchByIdBody, namespace: str) -> tuple[Response, int]: ...

registers the Flask route, and keeps the declaration on the view (an EndpointView) where the token check
finds the right (service.api.app, once per request) and service/api/openapi.py finds everything the
document says about the operation. Per request the view reads the fields (JSON, a urlencoded form or a
multipart form: bogv sends all three), resolves the namespace with the token's grant, validates the body
model and calls the route's function with both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, current_app, g, request
from flask.typing import ResponseReturnValue

from conf.errors import BadInput, Forbidden
from service.api import tokens
from service.api.contract import Body, Limits, parse
from service.api.tokens import Grant, namespace_for
from service.store.filters import NamespaceError
from service.usecases.deps import Deps

RouteFunction = Callable[..., ResponseReturnValue]


@dataclass(frozen=True)
class Ok:
    """A successful answer: the schema of `data` in the envelope (any pydantic-describable type), its
    description, the `msg` it carries (a JSON schema for the string), and the fields the envelope carries beside
    them (name: (type, description); the `region` of a search by image or an add), and its HTTP status (202 for
    a job accepted and still to run)."""

    data: Any
    description: str
    msg: Mapping[str, Any] = field(default_factory=lambda: {"type": "string", "enum": ["success"]})
    media_type: str = "application/json"
    beside: Mapping[str, tuple[Any, str]] = field(default_factory=dict)
    status: int = 200


@dataclass(frozen=True)
class Endpoint:
    """What the route declares: how it is reached, who may call it, what it takes and what it answers."""

    rule: str
    methods: tuple[str, ...]
    name: str
    right: str | None  # None: a known token (when tokens are set), no particular right
    body: type[Body] | Mapping[str, type[Body]] | None  # by the rule's `kind` when a mapping; None: no fields
    ok: Ok
    errors: tuple[int, ...]
    tag: str
    summary: str = ""
    description: str = ""
    query: bool = False  # the fields come from the query string (GET), not the body
    open: bool = False  # never needs the token
    path_params: Mapping[str, tuple[Any, str]] = field(default_factory=dict)  # name: (type, description)

    def body_for(self, kind: str | None) -> type[Body] | None:
        """The body model of this route (of its `kind`, for a route of several input kinds)."""
        if isinstance(self.body, Mapping):
            return self.body[kind or ""]
        return self.body


class EndpointView:
    """The Flask view of an Endpoint: fields, namespace and body first, then the route's function."""

    def __init__(self, spec: Endpoint, function: RouteFunction) -> None:
        self.spec = spec
        self.function = function
        self.__name__ = spec.name
        self.__doc__ = function.__doc__

    def __call__(self, **path_args: Any) -> ResponseReturnValue:
        """Answer one request."""
        kind = path_args.pop("kind", None)
        model = self.spec.body_for(kind)
        if model is None:
            return self.function(**path_args)
        fields = request.args.to_dict() if self.spec.query else request_fields()
        namespace = acting_namespace(fields.get("namespace"))
        body = parse(model, fields, Limits.of(deps().settings, unparsed_multipart=_unparsed_multipart()))
        return self.function(body, namespace, **path_args)


def endpoint(
    blueprint: Blueprint,
    rule: str,
    *,
    right: str | None,
    body: Any,
    ok: Ok,
    errors: tuple[int, ...],
    tag: str,
    methods: tuple[str, ...] = ("POST",),
    summary: str = "",
    description: str = "",
    query: bool = False,
    open_: bool = False,
    path_params: Mapping[str, tuple[Any, str]] | None = None,
) -> Callable[[RouteFunction], EndpointView]:
    """Register the decorated function as the route `rule` of `blueprint`, with everything it declares."""

    if right is not None and right not in tokens.RIGHTS:
        raise ValueError(f"unknown right {right!r}")  # a programming error in a route's declaration

    def register(function: RouteFunction) -> EndpointView:
        spec = Endpoint(
            rule,
            methods,
            function.__name__,
            right,
            body,
            ok,
            errors,
            tag,
            summary,
            description or (function.__doc__ or "").strip(),
            query,
            open_,
            path_params or {},
        )
        view = EndpointView(spec, function)
        blueprint.add_url_rule(rule, endpoint=function.__name__, view_func=view, methods=list(methods))
        return view

    return register


def endpoint_of(app: Flask, name: str | None) -> Endpoint | None:
    """The declaration of the Flask endpoint `name`, or None for a view that is not an Endpoint."""
    view = app.view_functions.get(name or "")
    return view.spec if isinstance(view, EndpointView) else None


def deps() -> Deps:
    """The use cases' dependencies, stored on the app by create_app."""
    return current_app.extensions["imgsim.deps"]


def request_fields() -> dict[str, Any]:
    """The request's fields, from JSON, a urlencoded form or a multipart form (its file parts included)."""
    if request.mimetype == "multipart/form-data":
        fields: dict[str, Any] = request.form.to_dict()
        upload = request.files.get("file")
        if upload is not None:
            fields["file"] = upload
        return fields
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # the json module recurses once per nesting level; silent=True does not cover this
        raise BadInput("the request body is JSON nested too deeply; send a flat JSON object") from None
    if body is None and request.mimetype == "application/x-www-form-urlencoded":
        # `curl -d '{...}'` sends JSON labelled as a form: accept both real forms and that.
        return request.form.to_dict()  # Werkzeug re-reads the cached body for this
    if body is None:
        raise BadInput(
            "the request body is not valid JSON; send a JSON object with Content-Type: "
            "application/json (or multipart/form-data for file uploads)"
        )
    if not isinstance(body, dict):
        raise BadInput('the request body must be a JSON object like {"url": "..."}')
    return body


def acting_namespace(requested: object) -> str:
    """The namespace this request acts in: its token's, or (admin or open service) the `namespace` field.

    The right was checked by service.api.auth.admit(), before the route ran.
    """
    grant: Grant = g.grant  # set by admit() before every route; missing would be a bug (500), never admin
    try:
        return namespace_for(grant, requested)
    except tokens.Forbidden as exc:
        raise Forbidden(exc.msg, reason=exc.reason) from None
    except NamespaceError as exc:
        raise BadInput(f"field 'namespace': {exc}", reason="bad_namespace") from None


def _unparsed_multipart() -> bool:
    """Werkzeug drops a multipart body it cannot parse without a word; the `file` field then says so."""
    return bool(
        request.mimetype == "multipart/form-data" and request.content_length and not request.form and not request.files
    )
