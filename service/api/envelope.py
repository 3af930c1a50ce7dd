"""bogv's response body: `{code, msg, data}`, with `code` equal to the HTTP status."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


def envelope(data: Any, msg: str = "success", code: int = 200) -> tuple[Response, int]:
    """The `{code, msg, data}` body every endpoint answers with; `code` equals the HTTP status."""
    return jsonify({"code": code, "msg": msg, "data": data}), code
