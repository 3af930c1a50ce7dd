"""`GET /docs`: the API reference rendered by Swagger UI from `/openapi.json`, with no internet needed.

Swagger UI's files come from the PyPI package `flask-swagger-ui` (its `dist/` folder holds the released
Swagger UI build); only its files are used, not its blueprint, because its page has an inline script that a
strict Content-Security-Policy would block. Our page loads one start-up script of ours instead, which
pre-authorises the `token` header from the console's session (if the user logged in there) and adds it to
try-it-out requests, so "Try it out" works against a token-protected service. Where `/openapi.json` needs the
token and none was given yet, the page asks for it (a prompt, not an error: a first visit did nothing wrong);
only a token the service refused is shown as an error. The page's words name the buttons as they read.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import flask_swagger_ui
from flask import Blueprint

from service.api.console import STATIC_DIR, Asset, load_asset, page_blueprint, page_csp, render_page

SWAGGER_DIST = Path(flask_swagger_ui.__file__).with_name("dist")
SWAGGER_FILES = ("swagger-ui.css", "swagger-ui-bundle.js")
OWN_FILES = ("docs-init.js", "docs.css")
PAGE = "docs.html"
PUBLIC_ENDPOINTS = frozenset({"docs.page", "docs.asset"})
# Swagger UI sets styles through the DOM (allowed) but also renders <style>-free inline SVG; data: covers
# its embedded icons. connect-src 'self' keeps try-it-out on this origin, where the token may go.
DOCS_CSP = page_csp(img_src="'self' data:")


def swagger_ui_version() -> str:
    """The installed flask-swagger-ui version (it tracks the Swagger UI release it ships)."""
    return version("flask-swagger-ui")


def docs_blueprint(openapi_url: str = "/openapi.json", static_dir: Path = STATIC_DIR) -> Blueprint:
    """`GET /docs` (the page) and `GET /docs/assets/<name>` (Swagger UI's files and ours)."""
    assets: dict[str, Asset] = {name: load_asset(SWAGGER_DIST / name) for name in SWAGGER_FILES}
    assets.update({name: load_asset(static_dir / name) for name in OWN_FILES})
    page = render_page(
        (static_dir / PAGE).read_text("utf-8").replace("{{openapi_url}}", openapi_url), "/docs/assets", assets
    )
    return page_blueprint("docs", "/docs", "/docs/assets", page, assets, DOCS_CSP)
