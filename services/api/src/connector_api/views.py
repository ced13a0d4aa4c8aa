"""The admin console's pages: what a URL asks for (filters, sort, page), and rendering the
console and the account page, whole or as the part that htmx swaps in place."""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from connector_api.charts import timeline
from connector_api.errors import InvalidInput
from connector_api.pages import counts_order, render, status_label
from connector_api.repository import AccountFilter
from connector_api.schemas import SortKey, _clean_text
from connector_api.services import console, listing, me
from connector_api.services.budget import admin_notices
from connector_api.services.context import RequestContext
from connector_api.sessions import AdminSession, Flash
from connector_api.state import AppState
from connector_common.db.engine import unit_of_work
from connector_common.status import AccountStatus

PAGE_SIZE = 50
MARKETPLACE = re.compile(r"^EBAY_[A-Z_]{2,30}$")
SORTABLE = (
    ("house_name", "House"),
    ("status", "Status"),
    ("token_expires_at", "Token expires"),
    ("last_health_at", "Last check"),
)
SORT_WORDS = {
    "house_name": ("A to Z", "Z to A"),
    "status": ("most urgent first", "least urgent first"),
    "token_expires_at": ("soonest first", "latest first"),
    "last_health_at": ("oldest first", "newest first"),
}
WINDOWS = {"24h": ("24 h", timedelta(hours=24)), "7d": ("7 days", timedelta(days=7))}
TOKEN_TYPES = ("token.refreshed", "token.refresh_failed", "account.reconnect_required")
_STATUSES = frozenset(s.value for s in AccountStatus)
_SORTS = frozenset(s.value for s in SortKey)


@dataclass(frozen=True)
class ConsoleQuery:
    """The console's filters, sort and page, as its URL carries them."""

    statuses: tuple[AccountStatus, ...] = ()
    marketplace: str | None = None
    purpose: str | None = None
    search: str | None = None
    sort: SortKey = SortKey.HOUSE_NAME
    cursor: str | None = None
    page: int = 1

    @classmethod
    def from_request(cls, request: Request) -> ConsoleQuery:
        """Lenient: a value that makes no sense is dropped, never an error page."""
        params = request.query_params
        statuses = tuple(AccountStatus(v) for v in params.getlist("status") if v in _STATUSES)
        marketplace = params.get("marketplace") or None
        sort = params.get("sort", "")
        page = params.get("page", "1")
        cursor = params.get("cursor")
        return cls(
            statuses=tuple(dict.fromkeys(statuses)),
            marketplace=marketplace if marketplace and MARKETPLACE.match(marketplace) else None,
            purpose=_text(params.get("purpose"), 500),
            search=_text(params.get("q"), 100),
            sort=SortKey(sort) if sort in _SORTS else SortKey.HOUSE_NAME,
            cursor=cursor if cursor and len(cursor) <= 1000 else None,
            page=int(page) if page.isdigit() and 0 < int(page) < 1_000_000 else 1,
        )

    @property
    def filtered(self) -> bool:
        return bool(self.statuses or self.marketplace or self.purpose or self.search)

    def filters(self) -> AccountFilter:
        return AccountFilter(
            statuses=self.statuses,
            purpose=self.purpose,
            marketplaces=(self.marketplace,) if self.marketplace else (),
            search=self.search,
        )

    def url(self, **changes: Any) -> str:
        """This view's URL, with some parts changed (``cursor=None`` drops the cursor)."""
        if isinstance(changes.get("sort"), str):
            changes["sort"] = SortKey(changes["sort"])
        query = dataclasses.replace(self, **changes) if changes else self
        params: list[tuple[str, str]] = [("status", s.value) for s in query.statuses]
        for name, value in (
            ("marketplace", query.marketplace),
            ("purpose", query.purpose),
            ("q", query.search),
            ("sort", None if query.sort == SortKey.HOUSE_NAME else query.sort.value),
            ("cursor", query.cursor),
            ("page", str(query.page) if query.page > 1 else None),
        ):
            if value:
                params.append((name, value))
        return "/admin" + ("?" + urlencode(params) if params else "")

    def title(self, org: str) -> str:
        parts = [", ".join(status_label(s) for s in self.statuses).capitalize()]
        parts += [f"\u201c{self.search}\u201d" if self.search else "", self.marketplace or ""]
        shown = " ".join(p for p in parts if p)
        page = f" (page {self.page})" if self.page > 1 else ""
        return f"{shown + ' · ' if shown else ''}Accounts{page} · {org} · eBay connector"


def _text(value: str | None, limit: int) -> str | None:
    if not value or len(value) > limit:
        return None
    try:
        return _clean_text(value, single_line=True) or None
    except ValueError:
        return None


@dataclass
class FormState:
    """What a refused form had in it, and why, per field (``form`` for the whole form)."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_validation(cls, values: dict[str, str], exc: ValidationError) -> FormState:
        errors: dict[str, str] = {}
        for error in exc.errors(include_input=False, include_url=False):
            name = ".".join(str(p) for p in error["loc"]) or "form"
            errors.setdefault(name, str(error["msg"]).removeprefix("Value error, "))
        return cls(values, errors)


def is_fragment(request: Request, target: str) -> bool:
    """An htmx request for the part of the page with this id."""
    return (
        request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == target
    )


def _common(app: AppState, session: AdminSession, ctx: RequestContext) -> dict[str, Any]:
    return {
        "session": session,
        "org": session.org_external_id,
        "can_write": ctx.principal.can_write,
        "csrf": app.admin_sessions.csrf_token(session),
        "now": ctx.now,
        "poll_seconds": app.settings.api.console_refresh_seconds,
        "statuses": counts_order(),
    }


async def render_console(
    request: Request,
    app: AppState,
    session: AdminSession,
    ctx: RequestContext,
    query: ConsoleQuery,
    *,
    connect: FormState | None = None,
    flash: Any = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The console, or only its live part for htmx (polling, filters, sorting, pages)."""
    fragment = is_fragment(request, "live")
    async with unit_of_work(app.sessions) as db:
        try:
            view = await console.console_view(
                db, ctx, app.cursors, query.filters(), query.sort, PAGE_SIZE, query.cursor
            )
        except InvalidInput:  # a page link from other filters, or one that was tampered with
            query = dataclasses.replace(query, cursor=None, page=1)
            flash = Flash("error", "That page link is no longer valid: here is the first page.")
            view = await console.console_view(
                db, ctx, app.cursors, query.filters(), query.sort, PAGE_SIZE, None
            )
        who = await me.who_am_i(db, ctx, app.topology)
        marketplaces, purposes = ([], []) if fragment else await listing.filter_values(db, ctx)
        notices = await admin_notices(db, ctx)  # re-consent banner, eBay budget line
    context = {
        **_common(app, session, ctx),
        "query": query,
        "view": view,
        "me": who,
        "marketplaces": marketplaces,
        "purposes": purposes,
        "sortable": SORTABLE,
        "sort_words": SORT_WORDS,
        "connect": connect or FormState(),
        "flash": flash,
        "page_title": query.title(who.org.name),
        "fragment": fragment,
        **notices,
    }
    template = "console_live.html" if fragment else "console.html"
    return render(request, template, context, status_code)


async def render_account(
    request: Request,
    app: AppState,
    session: AdminSession,
    ctx: RequestContext,
    account_id: uuid.UUID,
    *,
    edit: FormState | None = None,
    flash: Any = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The account page, or only its live part for htmx polling."""
    window = request.query_params.get("range", "24h")
    window = window if window in WINDOWS else "24h"
    label, span = WINDOWS[window]
    async with unit_of_work(app.sessions) as db:
        view = await console.account_view(db, ctx, account_id, span)
    context = {
        **_common(app, session, ctx),
        "view": view,
        "chart": timeline(view.checks, view.since, ctx.now, label),
        "window": window,
        "windows": [(key, name) for key, (name, _span) in WINDOWS.items()],
        "self_url": f"/admin/accounts/{account_id}?range={window}",
        "token_types": TOKEN_TYPES,
        "edit": edit or FormState(),
        "flash": flash,
        "page_title": f"{view.account.house_name} · Accounts · eBay connector",
    }
    fragment = context["fragment"] = is_fragment(request, "account-live")
    template = "account_live.html" if fragment else "account.html"
    return render(request, template, context, status_code)
