"""`/openapi.json`, generated: the app's routes declared with @endpoint (service/api/endpoint.py) give the paths,
methods, rights, summaries and answers; their pydantic body models (service/api/contract.py) and answer shapes
(service/api/views.py) give the schemas. Nothing is written by hand twice.

The document is OpenAPI 3.0.3, which every client generator and Swagger UI read; pydantic writes JSON Schema
2020-12, so `_openapi30` rewrites the few keywords 3.0 spells differently (null, const, examples, exclusive
bounds).
Each operation documents ONE request content type, so that generated clients have one body type per call:
multipart/form-data for the `file` endpoints, application/json for the rest. The server also accepts a
urlencoded or multipart form on every endpoint (bogv's clients send forms), which the description says.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Flask
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode
from werkzeug.routing import Rule

from conf.settings import Settings
from service.api.endpoint import Endpoint, endpoint_of
from service.api.errors import STATUS
from service.api.views import ListedRecord, RunningScan

OPENAPI_VERSION = "3.0.3"
REF_TEMPLATE = "#/components/schemas/{model}"
LICENSE = {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}  # 3.0 has no `identifier`
TAGS = [
    {"name": "add", "description": "store images"},
    {"name": "search", "description": "find similar images"},
    {"name": "records", "description": "look up, delete and count records"},
    {"name": "duplicates", "description": "duplicate groups of a whole namespace, found by a background scan"},
    {"name": "probes", "description": "liveness, readiness and this document"},
]
# Blueprints that are not API operations; the description names them instead.
NOT_OPERATIONS = (
    "`GET /console` (the ops console, a web page), `GET /docs` (this document rendered by Swagger "
    "UI) with their static files, and `GET /metrics` (Prometheus text format)"
)
DESCRIPTION = (
    "Image similarity search over REST: add product images (upload, URL, shared-volume path or base64), then find "
    "the most similar ones with a cosine score. ResNet50 or EfficientNet-Lite0 embeddings in Milvus.\n\n"
    'Every answer is the envelope `{"code", "msg", "data"}` and `code` equals the HTTP status. When TOKEN or '
    "TOKENS_FILE is set, every endpoint except /health and /ready needs a token (and /metrics unless "
    "METRICS_PUBLIC=1), in the `token` header or as `Authorization: Bearer <token>`; without either the API is "
    "open. A token of TOKENS_FILE is bound to a namespace (every request acts in it) and has rights: read "
    "(search, get, count, list), write (also add and delete) or admin (every namespace, chosen with the "
    "`namespace` field; the single TOKEN is an admin token). Unknown endpoints answer 404 and other methods 405, "
    "in the same envelope.\n\n"
    "Request bodies: each operation is documented with one content type, JSON (`application/json`), or "
    "`multipart/form-data` for the `file` endpoints. For bogv compatibility the server also accepts a urlencoded "
    'or multipart form with the same fields on every endpoint: there numbers and booleans are text ("10", '
    '"true"), a list of keys or ids may be comma-separated text ("a,b,c"), and `attrs`, `filter`, `items` and a '
    "`region` box are JSON text. An empty field counts as absent.\n\n"
    "Limits shown (MAX_LIMIT, MAX_KEY_LENGTH, MAX_BATCH_KEYS, MAX_BATCH_ITEMS) are this server's settings.\n\n"
    "Every answer carries an `X-Request-Id` header: the caller's own (1-64 of `A-Za-z0-9._:-`, starting with a "
    "letter or digit) or a new one; it is the reference a 500 quotes and it is on every log line of the request."
    f"\n\nNot described here, because they are not part of the API: {NOT_OPERATIONS}."
)
# What each error status means for a caller (the kinds behind them: service/api/errors.py).
ERRORS = {
    400: "A field is missing, has the wrong type or is out of range; the body is not JSON (or a form); a URL or path "
    "cannot be fetched or read.",
    401: "A token is required (TOKEN or TOKENS_FILE is set) and the request carries none or an unknown one (header "
    "`token` or `Authorization: Bearer`).",
    403: "The token lacks the right this endpoint needs, or is bound to another namespace than the one named; a path "
    "outside PATH_ROOTS, or (URL_DENY_PRIVATE=1) a URL whose host resolves or redirects to a loopback, private "
    "or link-local address.",
    404: "The record does not exist (or is not the caller's), or it has no thumbnail: show a placeholder. For "
    "search/id: the namespace holds no record with this id.",
    409: "A duplicate image with on_duplicate=reject (data: the record already stored), or namespaces, attrs, a "
    "filter or a region to store asked of a collection created by an earlier imgsim (data: null; the message "
    "names the migration: a new MILVUS_COLLECTION and a re-import), or a duplicate scan while one of the namespace "
    "is queued or running (data: that job, to follow).",
    413: "The image is over MAX_IMAGE_BYTES or MAX_IMAGE_PIXELS, its metadata is too large to decode safely, the "
    "request body is over MAX_IMAGE_BYTES*4/3 + 64 KiB, or a form has over 1000 fields.",
    415: "The bytes are not a decodable JPEG, PNG, GIF, BMP, WEBP or TIFF image (empty, truncated, corrupt or "
    "another format).",
    500: "A bug: `msg` quotes the request id (the X-Request-Id header) as the reference to the server log, never a "
    "stack trace.",
    503: "Milvus is unreachable or the model is not loaded yet; nothing was written. Retry when /ready answers 200.",
}
# The shared error answers, named after the error kind behind each status (service/api/errors.py).
ERROR_NAMES = {**{status: kind.__name__ for kind, status in STATUS.items()}, 500: "InternalError"}
_ARG = re.compile(r"<(?:(\w+)(?:\(([^)]*)\))?:)?(\w+)>")


def openapi_document(app: Flask, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of `app`'s declared endpoints, with the limits of `settings`."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        spec = endpoint_of(app, rule.endpoint)
        if spec is None:
            continue
        for kind, path in _paths(rule):
            for method in spec.methods:
                paths.setdefault(path, {})[method.lower()] = _operation(spec, kind, method, schemas)
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "imgsim", "version": "1.0.0", "description": DESCRIPTION, "license": LICENSE},
        "servers": [{"url": "http://localhost:7000", "description": "the default API_PORT"}],
        "tags": TAGS,
        "security": [{"tokenHeader": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "tokenHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "token",
                    "description": "A token (TOKEN, or one of TOKENS_FILE), as bogv-image-search-engine sends it.",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token as `Authorization: Bearer <token>`.",
                },
            },
        },
    }
    document["components"]["responses"] = {ERROR_NAMES[status]: _error(status, schemas) for status in sorted(ERRORS)}
    document["components"]["schemas"] = schemas.render()
    return _with_settings(_openapi30(document), settings)


def _paths(rule: Rule) -> Iterator[tuple[str | None, str]]:
    """The documented paths of a rule: one per choice of an `any(...)` argument, `<x>` as `{x}`."""
    choices: list[str | None] = [None]
    for converter, arguments, _name in _ARG.findall(rule.rule):
        if converter == "any":
            choices = [c.strip().strip("'\"") for c in arguments.split(",")]
    for choice in choices:

        def spelled(match: re.Match[str], choice: str | None = choice) -> str:
            return choice or "" if match.group(1) == "any" else "{" + match.group(3) + "}"

        yield choice, _ARG.sub(spelled, rule.rule)


def _operation(spec: Endpoint, kind: str | None, method: str, schemas: _Schemas) -> dict[str, Any]:
    model = spec.body_for(kind)
    summary = spec.summary
    if not summary and model is not None:  # a route of several input kinds: its body model's first words
        summary = (model.__doc__ or "").split("(")[0].split(";")[0].strip().rstrip(".")
    op: dict[str, Any] = {
        "operationId": "_".join(p for p in (spec.name, kind, method.lower() if len(spec.methods) > 1 else None) if p),
        "tags": [spec.tag],
        "summary": summary,
    }
    if spec.description:
        op["description"] = " ".join(spec.description.split())
    if spec.open:
        op["security"] = []
    parameters = [
        {"name": name, "in": "path", "required": True, "description": text, "schema": schemas.of(shape)}
        for name, (shape, text) in spec.path_params.items()
    ]
    if model is not None and spec.query:
        body_schema = schemas.inline(model)
        parameters += [
            {
                "name": name,
                "in": "query",
                "required": name in body_schema.get("required", []),
                "schema": {k: v for k, v in prop.items() if k != "description"},
                **({"description": prop["description"]} if "description" in prop else {}),
            }
            for name, prop in body_schema["properties"].items()
        ]
    elif model is not None and method != "GET":
        media = "multipart/form-data" if "file" in model.model_fields else "application/json"
        ref = schemas.of(model)
        required = bool(schemas.inline(model).get("required"))
        op["requestBody"] = {
            "required": required,
            "content": {media: {"schema": ref}},
            "description": "multipart/form-data with the image as the field `file` (and the other "
            "fields as form fields)."
            if media != "application/json"
            else "A JSON object (the server also takes a urlencoded or multipart form with the same fields).",
        }
    if parameters:
        op["parameters"] = parameters
    op["responses"] = {str(spec.ok.status): _ok(spec, schemas)}
    for status in sorted(spec.errors):
        op["responses"][str(status)] = {"$ref": f"#/components/responses/{ERROR_NAMES[status]}"}
    return op


def _envelope(
    code_schema: dict[str, Any], msg: Mapping[str, Any], data: dict[str, Any], beside: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "msg", "data", *(beside or {})],
        "additionalProperties": False,
        "properties": {
            "code": {**code_schema, "description": "always equals the HTTP status"},
            "msg": dict(msg),
            "data": data,
            **(beside or {}),
        },
    }


def _ok(spec: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    ok = spec.ok
    data = schemas.of(ok.data)
    if ok.media_type != "application/json" or not ok.msg:
        return {"description": ok.description, "content": {ok.media_type: {"schema": data}}}
    beside = {name: {"allOf": [schemas.of(shape)], "description": text} for name, (shape, text) in ok.beside.items()}
    schema = _envelope({"type": "integer", "enum": [ok.status]}, ok.msg, data, beside)
    return {"description": ok.description, "content": {"application/json": {"schema": schema}}}


def _error(status: int, schemas: _Schemas) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "object", "nullable": True, "enum": [None], "description": "always null on errors"}
    if status == 409:
        data = {
            "anyOf": [schemas.of(ListedRecord), schemas.of(RunningScan)],
            "nullable": True,
            "description": "the record already stored (on_duplicate=reject), the namespace's running scan "
            "(scan_running), else null",
        }
    schema = _envelope({"type": "integer", "enum": [status]}, {"type": "string", "minLength": 1}, data)
    return {"description": ERRORS[status], "content": {"application/json": {"schema": schema}}}


class _Schemas:
    """The JSON schemas of the types the operations name, sharing one set of component definitions."""

    def __init__(self) -> None:
        self._wanted: dict[int, tuple[Any, dict[str, Any]]] = {}  # id(shape) -> (shape, its schema, once rendered)

    def of(self, shape: Any) -> dict[str, Any]:
        """`shape`'s schema (or a reference to it): empty until render(), which fills every one in one run."""
        return self._wanted.setdefault(id(shape), (shape, {}))[1]

    def inline(self, shape: Any) -> dict[str, Any]:
        """`shape`'s own schema, not a reference (for a model's fields as query parameters, and `required`)."""
        schema = TypeAdapter(shape).json_schema(ref_template=REF_TEMPLATE, mode="validation")
        schema.pop("$defs", None)
        return schema

    def render(self) -> dict[str, Any]:
        """Fill in every schema of() handed out; the component schemas they refer to."""
        mode: JsonSchemaMode = "validation"
        inputs = [(key, mode, TypeAdapter(shape).core_schema) for key, (shape, _) in self._wanted.items()]
        mapping, definitions = GenerateJsonSchema(ref_template=REF_TEMPLATE).generate_definitions(inputs)
        for (key, _mode), schema in mapping.items():
            self._wanted[key][1].update(schema)
        return dict(sorted(definitions.items()))


def _openapi30(node: Any, in_properties: bool = False) -> Any:
    """JSON Schema 2020-12 as pydantic writes it, in the spelling of OpenAPI 3.0."""
    if isinstance(node, list):
        return [_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # a `properties` map: its keys are field names, not keywords
        fields = {name: _openapi30(value) for name, value in node.items()}
        for schema in fields.values():
            schema.pop("title", None)  # pydantic's spelling of the field name: noise in the document
        return fields
    out = {key: _openapi30(value, in_properties=key == "properties") for key, value in node.items()}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(exclusive)
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # 2020-12's number; 3.0's flag
            out[bound], out[exclusive] = value, True
    if "examples" in out and isinstance(out["examples"], list):
        out["example"] = out.pop("examples")[0]
    if out.get("default", 0) is None:
        out.pop("default")
    out = _nullable(out)
    if "$ref" in out and len(out) > 1:  # 3.0 ignores the siblings of $ref
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` (2020-12) as X with `nullable: true` (3.0)."""
    for union in ("anyOf", "oneOf"):
        options = schema.get(union)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            schema = {k: v for k, v in schema.items() if k != union}
            schema["nullable"] = True
            if len(rest) == 1 and "$ref" not in rest[0]:
                schema = {**rest[0], **schema}
            elif len(rest) == 1:
                schema["allOf"] = rest
            else:
                schema[union] = rest
    return schema


def _with_settings(node: Any, settings: Settings) -> Any:
    """Put this server's limits where the models mark a setting (`x-setting`, on the default's keyword)."""
    if isinstance(node, list):
        return [_with_settings(item, settings) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _with_settings(value, settings) for key, value in node.items()}
    setting = out.pop("x-setting", None)
    if setting is not None:
        for keyword in ("maximum", "maxLength", "maxItems"):
            if keyword in out:
                out[keyword] = getattr(settings, setting.lower())
        if isinstance(out.get("default"), int) and "maximum" in out:
            out["default"] = min(out["default"], out["maximum"])  # as the server does (contract.limit_value)
    return out
