"""OAuth: the consent page (``/oauth2/authorize``) and the token endpoint.

Follows eBay's user and application token flows: Basic client auth, form bodies, single-use
codes, refresh without a new refresh token (unless rotation is switched on for tests), a refresh
``scope`` that may be omitted (RFC 6749: as granted), and eBay's RFC 6749 error bodies.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import html
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ebay_sandbox import responses
from ebay_sandbox.calls import Call
from ebay_sandbox.sites import SITES, site_for
from ebay_sandbox.state import APP_SCOPES, USER_SCOPES, AppRegistration, SandboxError, Seller

if TYPE_CHECKING:
    from ebay_sandbox.app import Sandbox

AUTHORIZE_FIELDS = ("client_id", "redirect_uri", "response_type", "scope", "state", "prompt")
# eBay user IDs: 6-64 characters; letters, digits, and . - _ (no leading punctuation).
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{5,63}")


def split_scopes(raw: str | None) -> frozenset[str]:
    """eBay scopes are space-separated (``+`` in a form body decodes to a space)."""
    return frozenset(s for s in (raw or "").split() if s)


def with_query(url: str, params: dict[str, str]) -> str:
    """Append parameters to a URL, percent-encoding everything (``^`` ``#`` ``=`` ``+``)."""
    query = urlencode(params, quote_via=quote, safe="")
    return url + ("&" if "?" in url else "?") + query


class OAuthRoutes:
    """The consent page and token endpoint of one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.state = sandbox.state

    # --- consent page --------------------------------------------------------------------------

    async def identify_authorize(self, call: Call) -> None:
        """The app is named in the query (GET) or the form (POST)."""
        params = await _params(call.request)
        call.form = params
        call.client_id = params.get("client_id")
        seller = params.get("seller")
        if seller:
            with contextlib.suppress(SandboxError):
                call.seller = self.state.seller(seller)

    def _check_authorize(self, params: dict[str, str]) -> AppRegistration | Response:
        app = self.state.apps.get(params.get("client_id", ""))
        if app is None or params.get("redirect_uri") != app.ru_name:
            return responses.authorize_error()
        if params.get("response_type") != "code":
            return responses.authorize_error()
        scopes = split_scopes(params.get("scope"))
        if not scopes or not scopes <= USER_SCOPES:
            return responses.authorize_error(
                "The requested scope is invalid, unknown, malformed, or exceeds the scope "
                "granted to the client"
            )
        return app

    async def authorize(self, call: Call) -> Response:
        """GET shows the page; POST is the person's Agree or Decline."""
        checked = self._check_authorize(call.form)
        if isinstance(checked, Response):
            call.outcome = "invalid_request"
            return checked
        if call.request.method == "GET":
            call.outcome = "page"
            return HTMLResponse(self._page(call.form))
        app = checked
        base = {"state": call.form["state"]} if call.form.get("state") else {}
        if call.form.get("decision") != "agree":
            call.outcome = "declined"
            target = app.decline_url or app.accept_url
            params = {
                **base,
                "error": "access_denied",
                "error_description": "The user declined the consent request",
                "isAuthSuccessful": "false",
            }
            return RedirectResponse(with_query(target, params), status_code=302)
        if call.form.get("account") == "new":
            created = self._new_seller(call.form)
            if isinstance(created, str):
                call.outcome = "invalid_request"
                return HTMLResponse(self._page(call.form, created), 400)
            call.seller = created
        if call.seller is None:
            call.outcome = "invalid_request"
            return HTMLResponse(self._page(call.form, "Pick a seller to sign in as."), 400)
        code = self.state.issue_code(call.seller, app.client_id, split_scopes(call.form["scope"]))
        call.outcome = "consented"
        params = {
            **base,
            "code": code,
            "expires_in": str(self.sandbox.config.code_lifetime),
            "isAuthSuccessful": "true",
        }
        return RedirectResponse(with_query(app.accept_url, params), status_code=302)

    def _new_seller(self, form: dict[str, str]) -> Seller | str:
        """The "new test seller" choice: create it, or say why not (shown on the page)."""
        username = form.get("new_username", "").strip()
        if not username:
            return "Give the new test seller a username."
        if not USERNAME.fullmatch(username):
            return (
                "A username has 6 to 64 letters, digits, dots, dashes or underscores, "
                "and starts with a letter or digit."
            )
        site = site_for(form.get("new_site", ""))
        if site is None:
            return "Pick the marketplace the new seller registers on."
        try:
            return self.state.create_seller(username, site.site_id)
        except SandboxError as exc:
            if "exists" in str(exc):
                return f"A seller named {username!r} exists already: pick it from the list."
            return str(exc)

    def _page(self, params: dict[str, str], problem: str | None = None) -> str:
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(params.get(name, ""))}">'
            for name in AUTHORIZE_FIELDS
        )
        chosen = params.get("seller", "")
        sellers = sorted(self.state.sellers.values(), key=lambda s: s.username.lower())
        options = "".join(
            f'<option value="{html.escape(s.username)}"'
            f"{' selected' if s.username == chosen else ''}>{html.escape(s.username)} "
            f"({html.escape(s.site.marketplace_id)})</option>"
            for s in sellers
            if not s.suspended
        )
        new = params.get("account") == "new"
        site_chosen = params.get("new_site", "0")
        sites = "".join(
            f'<option value="{site.site_id}"'
            f"{' selected' if str(site.site_id) == site_chosen else ''}>"
            f"{site.marketplace_id} ({html.escape(site.code)}, site {site.site_id})</option>"
            for site in SITES
        )
        scopes = "".join(
            f"<li>{html.escape(s)}</li>" for s in sorted(split_scopes(params.get("scope")))
        )
        app = html.escape(params.get("client_id", ""))
        warning = f'<p class="problem" role="alert">{html.escape(problem)}</p>' if problem else ""
        username = html.escape(params.get("new_username", ""))
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<title>eBay sandbox: grant application access</title></head><body><main>"
            f"<h1>Grant application access</h1>{warning}"
            f"<p>The application <strong>{app}</strong> asks to access your eBay account:</p>"
            f"<ul>{scopes}</ul>"
            f'<form method="post" action="/oauth2/authorize">{hidden}'
            "<fieldset><legend>Sign in as</legend>"
            '<p><input type="radio" id="account-existing" name="account" value="existing"'
            f"{'' if new else ' checked'}> "
            '<label for="account-existing">An existing test seller</label> '
            '<label for="seller">Seller</label> '
            f'<select id="seller" name="seller">{options}</select></p>'
            '<p><input type="radio" id="account-new" name="account" value="new"'
            f"{' checked' if new else ''}> "
            '<label for="account-new">A new test seller</label></p>'
            '<p><label for="new_username">Username</label> '
            f'<input id="new_username" name="new_username" value="{username}" maxlength="64" '
            'autocomplete="off" placeholder="montreal_parts"> '
            '<label for="new_site">Registered on</label> '
            f'<select id="new_site" name="new_site">{sites}</select></p>'
            "</fieldset>"
            '<p><button type="submit" name="decision" value="agree">Agree</button> '
            '<button type="submit" name="decision" value="decline">Decline</button></p>'
            "</form><p><small>Local eBay sandbox: no real eBay account is involved. A new test "
            "seller is created when you agree, and kept across restarts.</small></p>"
            "</main></body></html>"
        )

    # --- token endpoint ------------------------------------------------------------------------

    async def identify_token(self, call: Call) -> None:
        """Client from Basic auth; seller from the code or refresh token in the body."""
        call.form = dict(parse_qsl((await call.request.body()).decode("utf-8", "replace")))
        credentials = _basic_credentials(call.request)
        if credentials is not None:
            call.client_id = credentials[0]
        grant_type = call.form.get("grant_type")
        seller_id = None
        if grant_type == "authorization_code":
            code = self.state.codes.get(call.form.get("code", ""))
            seller_id = code.seller_id if code else None
        elif grant_type == "refresh_token":
            grant = self.state.grants.get(call.form.get("refresh_token", ""))
            seller_id = grant.seller_id if grant else None
        if seller_id is not None:
            call.seller = self.state.sellers.get(seller_id)

    async def token(self, call: Call) -> Response:
        """Mint tokens for the three grants eBay supports."""
        credentials = _basic_credentials(call.request)
        app = self.state.apps.get(credentials[0]) if credentials else None
        if app is None or credentials is None or credentials[1] != app.client_secret:
            call.outcome = "invalid_client"
            return responses.oauth_error("invalid_client", 401)
        content_type = call.request.headers.get("content-type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            call.outcome = "invalid_request"
            return responses.oauth_error("invalid_request")
        grant_type = call.form.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange(call, app)
        if grant_type == "refresh_token":
            return self._refresh(call, app)
        if grant_type == "client_credentials":
            return self._client_credentials(call, app)
        call.outcome = "unsupported_grant_type"
        return responses.oauth_error("unsupported_grant_type")

    def _exchange(self, call: Call, app: AppRegistration) -> Response:
        if "code" not in call.form or "redirect_uri" not in call.form:
            call.outcome = "invalid_request"
            return responses.oauth_error("invalid_request")
        with self.state.lock:
            code = self.state.codes.get(call.form["code"])
            usable = (
                code is not None
                and not code.used
                and code.client_id == app.client_id
                and code.expires_at > time.time()
                and call.form["redirect_uri"] == app.ru_name
            )
            if code is not None:
                code.used = True  # single use, even when this attempt fails
                self.state.save("code", call.form["code"], code)
        if not usable or code is None:
            call.outcome = "invalid_grant"
            return responses.oauth_error("invalid_grant")
        grant = self.state.new_grant(code.seller_id, app.client_id, code.scopes)
        token, _record = self.state.issue_access(app.client_id, code.scopes, grant)
        call.outcome = "exchanged"
        return responses.json_ok(
            {
                "access_token": token,
                "expires_in": self.state.access_token_lifetime,
                "refresh_token": grant.refresh_token,
                "refresh_token_expires_in": self.state.refresh_token_lifetime,
                "token_type": "User Access Token",
            }
        )

    def _refresh(self, call: Call, app: AppRegistration) -> Response:
        if "refresh_token" not in call.form:
            call.outcome = "invalid_request"
            return responses.oauth_error("invalid_request")
        grant = self.state.grants.get(call.form["refresh_token"])
        if (
            grant is None
            or grant.revoked
            or grant.client_id != app.client_id
            or grant.refresh_expires_at <= time.time()
        ):
            call.outcome = "invalid_grant"
            return responses.oauth_error("invalid_grant_refresh")
        # RFC 6749 section 6: scope is optional on refresh; omitted (or blank) means "as
        # granted". Several eBay client configurations leave it out.
        scopes = split_scopes(call.form.get("scope")) or grant.scopes
        if not scopes <= grant.scopes:
            call.outcome = "invalid_scope"
            return responses.oauth_error("invalid_scope")
        token, _record = self.state.issue_access(app.client_id, scopes, grant)
        call.outcome = "refreshed"
        body: dict[str, object] = {
            "access_token": token,
            "expires_in": self.state.access_token_lifetime,
            "token_type": "User Access Token",
        }
        if self.state.rotate_refresh_tokens:
            self.state.rotate(grant)
            body["refresh_token"] = grant.refresh_token
            body["refresh_token_expires_in"] = self.state.refresh_token_lifetime
        return responses.json_ok(body)

    def _client_credentials(self, call: Call, app: AppRegistration) -> Response:
        scopes = split_scopes(call.form.get("scope"))
        if not scopes:
            call.outcome = "invalid_request"
            return responses.oauth_error("invalid_request")
        if not scopes <= APP_SCOPES:
            call.outcome = "invalid_scope"
            return responses.oauth_error("invalid_scope")
        token, _record = self.state.issue_access(app.client_id, scopes, None)
        call.outcome = "app_token"
        return responses.json_ok(
            {
                "access_token": token,
                "expires_in": self.state.access_token_lifetime,
                "token_type": "Application Access Token",
            }
        )


async def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", "replace")
        params.update(parse_qsl(body, keep_blank_values=True))
    return params


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None
