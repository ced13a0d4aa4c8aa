"""The sandbox ASGI app: eBay's routes, the control API, one state (optionally on disk)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from ebay_sandbox.apis import ApiRoutes
from ebay_sandbox.calls import EbayRoute
from ebay_sandbox.control import ControlRoutes
from ebay_sandbox.faults import FaultBook
from ebay_sandbox.notifications import NotificationHub, NotificationRoutes
from ebay_sandbox.oauth import OAuthRoutes
from ebay_sandbox.state import SandboxConfig, SandboxState


class Sandbox:
    """A sandbox instance: configuration, state and faults shared by all its routes."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.state = SandboxState(config)
        self.faults = FaultBook()
        self.notifications = NotificationHub()  # Marketplace Account Deletion

    def close(self) -> None:
        """Write the state file's last changes and close it (no-op in memory)."""
        self.state.close()


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """Build the sandbox; ``app.state.sandbox`` gives in-process access to its state."""
    sandbox = Sandbox(config or SandboxConfig())
    oauth = OAuthRoutes(sandbox)
    apis = ApiRoutes(sandbox)

    def ebay(path: str, route: EbayRoute, methods: list[str]) -> Route:
        return Route(path, route, methods=methods)

    routes = [
        ebay(
            "/oauth2/authorize",
            EbayRoute(
                sandbox, "authorize", "page", "oauth", oauth.identify_authorize, oauth.authorize
            ),
            ["GET", "POST"],
        ),
        ebay(
            "/identity/v1/oauth2/token",
            EbayRoute(sandbox, "token", "oauth", "oauth", oauth.identify_token, oauth.token),
            ["POST"],
        ),
        ebay(
            "/ws/api.dll",
            EbayRoute(sandbox, "trading", "trading", "trading", apis.identify_iaf, apis.trading),
            ["POST"],
        ),
        ebay(
            "/commerce/identity/v1/user/",
            EbayRoute(sandbox, "identity", "rest", "identity", apis.identify_bearer, apis.identity),
            ["GET"],
        ),
        ebay(
            "/developer/analytics/v1_beta/rate_limit/",
            EbayRoute(
                sandbox,
                "rate_limit",
                "rest",
                "analytics",
                apis.identify_bearer,
                apis.app_rate_limit,
            ),
            ["GET"],
        ),
        ebay(
            "/developer/analytics/v1_beta/user_rate_limit/",
            EbayRoute(
                sandbox,
                "user_rate_limit",
                "rest",
                "analytics",
                apis.identify_bearer,
                apis.user_rate_limit,
            ),
            ["GET"],
        ),
        *ControlRoutes(sandbox).routes(),
        *NotificationRoutes(sandbox, apis).routes(),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    return app
