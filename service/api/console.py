"""The ops console at `/console`: one HTML page plus its script and style sheet, all served by imgsim.

The page holds no data and no secret (it asks for the token itself and sends it as a header), so the page
and its assets are open; every API call the page makes goes through the normal token check (the page learns
what its token may do from `GET /api/image/sim/whoami`, in service/api/routes.py, and disables, saying why,
the controls the token may not use). The assets
are cached for a year under a content-hash query (`console.js?v=<hash>`), so an upgrade is picked up at
once while repeat visits load nothing. A Content-Security-Policy forbids every origin but imgsim's own.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from flask import Blueprint, Response, request
from werkzeug.exceptions import NotFound


def page_csp(img_src: str) -> str:
    """The Content-Security-Policy of imgsim's own pages: 'self' only (no CDN, no web font, no inline script or
    style), with `img_src` for the images the page shows."""
    return (
        f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {img_src}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


STATIC_DIR = Path(__file__).with_name("static")
ASSETS = ("console.js", "console.css")
PAGE = "console.html"
# Endpoints the app-wide token check must let through (the page and its assets; the API stays guarded).
PUBLIC_ENDPOINTS = frozenset({"console.page", "console.asset"})
# The token's own grant: needs a known token (the app's check) but no particular right.
# blob: for thumbnails fetched with the token header and for the preview of the query image; data: for the
# empty favicon.
CONSOLE_CSP = page_csp(img_src="'self' blob: data:")
LONG_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    """A static file held in memory with its content type and a short content hash."""

    body: bytes
    content_type: str
    digest: str


def load_asset(path: Path) -> Asset:
    """Read `path` once; the digest (12 hex of SHA-256) versions its URL."""
    body = path.read_bytes()
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type in ("application/javascript", "text/javascript"):
        content_type += "; charset=utf-8"
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:12])


def secure_headers(response: Response, csp: str) -> Response:
    """Add the CSP and the headers that keep the page from being sniffed, framed or leaking its URL."""
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def asset_response(asset: Asset, requested_version: str | None, csp: str) -> Response:
    """The asset, cached for a year only when the URL names its current version (else revalidated)."""
    response = Response(asset.body, content_type=asset.content_type)
    response.headers["Cache-Control"] = LONG_CACHE if requested_version == asset.digest else "no-cache"
    response.headers["ETag"] = f'"{asset.digest}"'
    return secure_headers(response, csp)


def render_page(template: str, prefix: str, assets: dict[str, Asset]) -> bytes:
    """The page with each `{{name}}` placeholder replaced by the asset's versioned URL."""
    for name, asset in assets.items():
        template = template.replace("{{" + name + "}}", f"{prefix}/{name}?v={asset.digest}")
    return template.encode("utf-8")


def page_blueprint(name: str, url: str, asset_url: str, page: bytes, assets: dict[str, Asset], csp: str) -> Blueprint:
    """A blueprint `name` serving `page` at `url` (never cached) and `assets` at `asset_url/<name>`.

    Its endpoints are `<name>.page` and `<name>.asset` (the app's token check lets both through).
    """
    bp = Blueprint(name, __name__)

    @bp.get(url, endpoint="page")
    @bp.get(url + "/", endpoint="page")
    def show_page() -> Response:
        """The page, revalidated on every visit so an upgrade shows at once."""
        response = Response(page, content_type="text/html; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache"
        return secure_headers(response, csp)

    @bp.get(asset_url + "/<name>", endpoint="asset")
    def show_asset(name: str) -> Response:
        """One of the page's own files (any other name: 404)."""
        asset = assets.get(name)
        if asset is None:
            raise NotFound()
        return asset_response(asset, request.args.get("v"), csp)

    return bp


def console_blueprint(static_dir: Path = STATIC_DIR) -> Blueprint:
    """`GET /console` (the page, never cached) and `GET /console/static/<name>` (its script and styles)."""
    assets = {name: load_asset(static_dir / name) for name in ASSETS}
    page = render_page((static_dir / PAGE).read_text("utf-8"), "/console/static", assets)
    return page_blueprint("console", "/console", "/console/static", page, assets, CONSOLE_CSP)
