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

# How each status looks. Keyed by value, and every lookup has a default: a status added to
# AccountStatus shows up in the counts bar, filters and sorting without touching this module.
STATUS_TONES: dict[str, str] = {
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
STATUS_LABELS: dict[str, str] = {
    "reconsent_due": "re-consent due",
    "deleted_by_ebay": "deleted by eBay",
}


def status_tone(status: str) -> str:
    """The badge colour of a status: ok, warn, bad or muted."""
    return STATUS_TONES.get(str(status), "warn")


def status_label(status: str) -> str:
    """A status for people: 'reconnect required'."""
    value = str(status)
    return STATUS_LABELS.get(value, value.replace("_", " "))


def counts_order() -> list[AccountStatus]:
    """The counts bar, from the best status to the last resort (AccountStatus reversed)."""
    return list(reversed(AccountStatus))


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


def iso(moment: datetime | None) -> str:
    """A machine-readable time for <time datetime>."""
    return moment.isoformat(timespec="seconds") if moment else ""


def absolute(moment: datetime | None) -> str:
    """'2026-12-01 14:03:07 UTC'."""
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "\u2014"


def describe(event_type: str, details: dict[str, Any]) -> tuple[str, str]:
    """An account history entry for people: a title and one line of detail."""
    d = details
    by = f" by {d['actor']}" if d.get("actor") else ""
    if event_type == "token.refreshed":
        until = absolute(_parse(d.get("access_expires_at")))
        return "Token refreshed", f"version {d.get('token_version')}, valid until {until}"
    if event_type == "token.refresh_failed":
        retry = _parse(d.get("retry_at"))
        text = f"{d.get('reason', '')}" + (f"; retrying at {absolute(retry)}" if retry else "")
        return "Refresh failed", text
    if event_type == "account.reconnect_required":
        return "Reconnect required", str(d.get("reason", ""))
    if event_type in ("account.connected", "account.reconnected"):
        title = "Connected" if event_type == "account.connected" else "Reconnected"
        seller = f"eBay user {d.get('username') or d.get('ebay_user_id')}"
        return title, f"{seller} on {d.get('marketplace_id')}{by}"
    if event_type == "account.renamed":
        return "Renamed", f"{d.get('old_house_name')} \u2192 {d.get('new_house_name')}{by}"
    if event_type == "account.purpose_changed":
        return "Purpose changed", f"{d.get('old_purpose')!r} \u2192 {d.get('new_purpose')!r}{by}"
    if event_type == "health.changed":
        if d.get("previous_outcome") is None:
            title = f"First health check: {d.get('outcome')}"
        else:
            title = "Turned unhealthy" if d.get("outcome") == "unhealthy" else "Healthy again"
        return title, str(d.get("reason") or "")
    name = event_type.split(".")[-1].replace("_", " ")
    return name[:1].upper() + name[1:], by.strip()


def _parse(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def install_globals() -> None:
    """Helpers every template may use."""
    TEMPLATES.env.globals.update(
        status_tone=status_tone,
        status_label=status_label,
        relative=relative,
        iso=iso,
        absolute=absolute,
        describe=describe,
    )


install_globals()
