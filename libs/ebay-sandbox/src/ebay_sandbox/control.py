"""The control API under ``/_sandbox/``: never part of eBay's surface.

Tests, benchmarks and ``make run`` use it to register apps, create and suspend sellers, grant or
revoke consent without a browser, expire tokens, inject faults and read the call log.
Errors are ``{"error": "..."}`` with HTTP 400 (bad input) or 404 (unknown seller).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ebay_sandbox.faults import fault_from_json
from ebay_sandbox.oauth import split_scopes
from ebay_sandbox.state import USER_SCOPES, AppRegistration, SandboxError

if TYPE_CHECKING:
    from ebay_sandbox.app import Sandbox

INVALID_REASONS = frozenset({"expired", "invalid", "hard_expired", "revoked"})

Endpoint = Callable[[Request], Awaitable[Response]]


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise SandboxError("the body must be JSON") from None
    if not isinstance(value, dict):
        raise SandboxError("the body must be a JSON object")
    return value


def _guard(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except SandboxError as exc:
            status = 404 if str(exc).startswith("no seller") else 400
            return JSONResponse({"error": str(exc)}, status)
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, 400)

    return guarded


class ControlRoutes:
    """Endpoints that drive one sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.state = sandbox.state

    def routes(self) -> list[Route]:
        """Starlette routes, all under ``/_sandbox``."""
        table: list[tuple[str, Endpoint, list[str]]] = [
            ("/health", self.health, ["GET"]),
            ("/reset", self.reset, ["POST"]),
            ("/settings", self.settings, ["GET", "POST"]),
            ("/apps", self.apps, ["GET", "POST"]),
            ("/sellers", self.sellers, ["GET", "POST"]),
            ("/sellers/{username}", self.seller, ["GET"]),
            ("/sellers/{username}/suspend", self.suspend, ["POST"]),
            ("/sellers/{username}/rename", self.rename, ["POST"]),
            ("/sellers/{username}/revoke", self.revoke, ["POST"]),
            ("/sellers/{username}/invalidate-tokens", self.invalidate_seller, ["POST"]),
            ("/tokens/invalidate", self.invalidate_token, ["POST"]),
            ("/consent", self.consent, ["POST"]),
            ("/faults", self.faults, ["GET", "POST", "DELETE"]),
            ("/calls", self.calls, ["GET", "DELETE"]),
        ]
        return [Route(f"/_sandbox{path}", _guard(fn), methods=m) for path, fn, m in table]

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        self.sandbox.faults.clear()
        self.sandbox.notifications.reset()
        return JSONResponse({"reset": True})

    async def settings(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _body(request)
            with self.state.lock:
                if "access_token_lifetime" in body:
                    self.state.access_token_lifetime = _positive(body["access_token_lifetime"])
                if "refresh_token_lifetime" in body:
                    self.state.refresh_token_lifetime = _positive(body["refresh_token_lifetime"])
                if "rotate_refresh_tokens" in body:
                    self.state.rotate_refresh_tokens = bool(body["rotate_refresh_tokens"])
        return JSONResponse(
            {
                "access_token_lifetime": self.state.access_token_lifetime,
                "refresh_token_lifetime": self.state.refresh_token_lifetime,
                "rotate_refresh_tokens": self.state.rotate_refresh_tokens,
            }
        )

    async def apps(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _body(request)
            for name in ("client_id", "client_secret", "ru_name", "accept_url"):
                if not isinstance(body.get(name), str) or not body[name]:
                    raise SandboxError(f"{name} is required")
            app = AppRegistration(
                body["client_id"],
                body["client_secret"],
                body["ru_name"],
                body["accept_url"],
                body.get("decline_url"),
            )
            self.state.register_app(app)
            return JSONResponse(_app_json(app), 201)
        return JSONResponse({"apps": [_app_json(a) for a in self.state.apps.values()]})

    async def sellers(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _body(request)
            username = body.get("username")
            if not isinstance(username, str):
                raise SandboxError("username is required")
            site = body.get("site_id", body.get("marketplace_id"))
            if site is None:  # no default site: a seller lives on the site it registered on
                raise SandboxError("site_id or marketplace_id is required")
            seller = self.state.create_seller(
                username,
                site,
                account_type=str(body.get("account_type", "INDIVIDUAL")),
                store_owner=bool(body.get("store_owner", False)),
                email=body.get("email"),
            )
            return JSONResponse(seller.public(), 201)
        sellers = sorted(self.state.sellers.values(), key=lambda s: s.username.lower())
        return JSONResponse({"sellers": [s.public() for s in sellers]})

    async def seller(self, request: Request) -> Response:
        return JSONResponse(self.state.seller(request.path_params["username"]).public())

    async def suspend(self, request: Request) -> Response:
        body = await _body(request)
        seller = self.state.seller(request.path_params["username"])
        self.state.suspend_seller(seller, bool(body.get("suspended", True)))
        return JSONResponse(seller.public())

    async def rename(self, request: Request) -> Response:
        body = await _body(request)
        new_name = body.get("username")
        if not isinstance(new_name, str) or not new_name:
            raise SandboxError("username is required")
        seller = self.state.rename_seller(request.path_params["username"], new_name)
        return JSONResponse(seller.public())

    async def revoke(self, request: Request) -> Response:
        body = await _body(request)
        seller = self.state.seller(request.path_params["username"])
        revoked = self.state.revoke(seller, body.get("client_id"))
        return JSONResponse({"revoked": revoked})

    async def invalidate_seller(self, request: Request) -> Response:
        body = await _body(request)
        seller = self.state.seller(request.path_params["username"])
        reason = _reason(body)
        return JSONResponse(
            {"invalidated": self.state.invalidate_access(seller=seller, reason=reason)}
        )

    async def invalidate_token(self, request: Request) -> Response:
        body = await _body(request)
        token = body.get("access_token")
        if not isinstance(token, str):
            raise SandboxError("access_token is required")
        count = self.state.invalidate_access(token=token, reason=_reason(body))
        return JSONResponse({"invalidated": count})

    async def consent(self, request: Request) -> Response:
        """A seller's consent without the browser: returns the authorization code."""
        body = await _body(request)
        seller = self.state.seller(str(body.get("seller", "")))
        client_id = body.get("client_id")
        if client_id not in self.state.apps:
            raise SandboxError("client_id is not a registered app")
        raw = body.get("scopes", body.get("scope", ""))
        scopes = frozenset(raw) if isinstance(raw, list) else split_scopes(str(raw))
        if not scopes or not scopes <= USER_SCOPES:
            raise SandboxError("scopes must be a non-empty list of eBay user scopes")
        code = self.state.issue_code(seller, str(client_id), scopes)
        return JSONResponse(
            {"code": code, "expires_in": self.sandbox.config.code_lifetime}, status_code=201
        )

    async def faults(self, request: Request) -> Response:
        if request.method == "POST":
            fault = self.sandbox.faults.add(fault_from_json(await _body(request)))
            return JSONResponse(fault.public(), 201)
        if request.method == "DELETE":
            route = request.query_params.get("route")
            return JSONResponse({"cleared": self.sandbox.faults.clear(route)})
        return JSONResponse({"faults": [f.public() for f in self.sandbox.faults.list()]})

    async def calls(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.state.calls.clear()
            return JSONResponse({"cleared": True})
        query = request.query_params
        since = query.get("since")
        found = self.state.find_calls(
            seller=query.get("seller"),
            route=query.get("route"),
            since=float(since) if since else None,
            client_id=query.get("client_id"),
        )
        return JSONResponse({"calls": [c.public() for c in found]})


def _positive(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise SandboxError("lifetimes must be at least 1 second")
    return number


def _reason(body: dict[str, Any]) -> str:
    reason = str(body.get("reason", "expired"))
    if reason not in INVALID_REASONS:
        raise SandboxError(f"reason must be one of {sorted(INVALID_REASONS)}")
    return reason


def _app_json(app: AppRegistration) -> dict[str, Any]:
    # The client secret is the app's own; the control API does not echo it back.
    return {
        "client_id": app.client_id,
        "ru_name": app.ru_name,
        "accept_url": app.accept_url,
        "decline_url": app.decline_url,
    }
