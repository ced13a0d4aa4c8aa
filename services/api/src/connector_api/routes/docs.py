"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) without the internet.

The JavaScript and CSS are the pinned assets of the ``fastapi-offline`` wheel (1.7.7: Swagger
UI 5.32.6, Apache-2.0; ReDoc 2.5.3, MIT), served from the package under ``/static/api-docs/``, never
from a CDN. The pages hold no inline script (the Swagger UI start-up is ``/static/docs.js``), so
they run under a Content-Security-Policy that allows scripts from this origin only.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from connector_api.pages import TEMPLATES

router = APIRouter(include_in_schema=False)

VENDOR_DIR = Path(fastapi_offline.__file__).parent / "static"
# Scripts only from this origin: no inline script, no eval. Both UIs set inline styles
# (ReDoc's styled-components, React's style attributes), and ReDoc runs its search in a worker
# made from a blob.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _page(request: Request, template: str) -> HTMLResponse:
    openapi_url = request.app.openapi_url or "/openapi.json"
    response = TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "title": request.app.title,
            "openapi_url": f"{request.scope.get('root_path', '')}{openapi_url}",
        },
    )
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    """The API reference, interactive (Swagger UI)."""
    return _page(request, "swagger.html")


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    """The API reference, to read (ReDoc)."""
    return _page(request, "redoc.html")
