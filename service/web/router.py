"""Serves the web page (``GET /``) and its static assets (``GET /static/{path}``).

The page uses relative URLs only, so it works behind a reverse proxy that mounts the
gateway under a path prefix. When the app knows that prefix (FastAPI/ASGI
``root_path``), the page gets a ``<base href="{root_path}/">`` so that relative URLs
also resolve when the page is opened without its trailing slash.
"""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from service.api.errors import ApiError

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX = STATIC_DIR / "index.html"
BASE_MARKER = "<!--base-->"

#: Content types of the files the page ships; anything else is not served.
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
}

#: Same-origin only; blob: for the textures three.js decodes and the downloads the page
#: builds when an API key has to be sent as a header.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self' blob: data:; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; "
    "form-action 'self'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def _index_template() -> str:
    return INDEX.read_text(encoding="utf-8")


def _root_path(request: Request) -> str:
    return str(request.scope.get("root_path") or "").rstrip("/")


def render_index(root_path: str) -> str:
    """The page with a ``<base>`` for ``root_path`` (none when it is empty)."""
    base = f'<base href="{html.escape(root_path, quote=True)}/">' if root_path else ""
    return _index_template().replace(BASE_MARKER, base, 1)


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(render_index(_root_path(request)), headers=_PAGE_HEADERS)


@router.get("/index.html")
async def index_html(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{_root_path(request)}/", status_code=308)


def _static_file(path: str) -> Path | None:
    """The file under ``STATIC_DIR`` for a URL path, or None (no escaping the folder)."""
    if not path or "\\" in path or "\x00" in path:
        return None
    candidate = (STATIC_DIR / path).resolve()
    if STATIC_DIR not in candidate.parents or not candidate.is_file():
        return None
    return candidate


@router.get("/static/{path:path}")
async def static_file(path: str) -> Response:
    file = _static_file(path)
    media_type = _MEDIA_TYPES.get(file.suffix) if file else None
    if file is None or media_type is None:
        raise ApiError(404, "not_found", "No such resource.")
    return FileResponse(file, media_type=media_type, headers=_PAGE_HEADERS)
