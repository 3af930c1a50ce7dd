"""bogv's response body: `{code, msg, data}`, with `code` equal to the HTTP status."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


def envelope(
    data: Any, msg: str = "success", code: int = 200, region: dict[str, int] | None = None
) -> tuple[Response, int]:
    """The `{code, msg, data}` body every endpoint answers with; `code` equals the HTTP status.

    `region`: the box of the image a search by image or an add used, beside `data` (bogv's clients ignore it).
    """
    body: dict[str, Any] = {"code": code, "msg": msg, "data": data}
    if region is not None:
        body["region"] = region
    return jsonify(body), code
