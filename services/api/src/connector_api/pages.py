"""Server-rendered pages: Jinja2 templates with autoescaping, and small view helpers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from connector_common.status import AccountStatus

PACKAGE_DIR = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))
STATIC_DIR = PACKAGE_DIR / "static"

# Pages load only our own CSS and JS; no inline script can run.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

BADGES: dict[str, str] = {
    AccountStatus.HEALTHY: "ok",
    AccountStatus.EXPIRING_SOON: "warn",
    AccountStatus.UNKNOWN: "muted",
    AccountStatus.UNHEALTHY: "bad",
    AccountStatus.EXPIRED: "bad",
    AccountStatus.ERROR: "bad",
    AccountStatus.RECONNECT_REQUIRED: "bad",
    AccountStatus.NOT_CONNECTED: "muted",
    AccountStatus.DEACTIVATED: "muted",
    AccountStatus.RECONSENT_DUE: "warn",
    AccountStatus.DELETED_BY_EBAY: "muted",
}


def relative(moment: datetime | None, now: datetime) -> str:
    """'in 1h 52m', '3m ago' or an em dash."""
    if moment is None:
        return "\u2014"
    seconds = int((moment - now).total_seconds())
    future = seconds >= 0
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d {hours}h"
    elif hours:
        text = f"{hours}h {minutes}m"
    elif minutes:
        text = f"{minutes}m"
    else:
        text = f"{secs}s"
    return f"in {text}" if future else f"{text} ago"


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """A page with the security headers every page gets."""
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response
