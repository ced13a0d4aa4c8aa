"""eBay's Marketplace Account Deletion notifications, played by the sandbox.

eBay's side of the exchange (docs: developer.ebay.com/marketplace-account-deletion; eBay's
event-notification SDKs):

- the endpoint is registered with a verification token; eBay checks it with
  ``GET <endpoint>?challenge_code=...`` and expects
  ``{"challengeResponse": hex(SHA-256(challenge_code + verification_token + endpoint))}``;
- a notification is ``POST <endpoint>`` with compact JSON and ``X-EBAY-SIGNATURE``: base64 of
  ``{"alg":"ecdsa","kid":...,"signature":<base64 DER ECDSA P-256/SHA-1 of the body>,
  "digest":"SHA1"}``;
- the Notification API ``GET /commerce/notification/v1/public_key/{kid}`` (application token)
  answers ``{"key": "-----BEGIN PUBLIC KEY-----<one line>-----END PUBLIC KEY-----",
  "algorithm": "ECDSA", "digest": "SHA1"}``; an unknown kid is 404 with errorId 195001.

The sandbox signs with its own P-256 key (made at start-up; ``rotate-key`` adds a new one and
keeps the old ones verifiable, as eBay does). Control calls under ``/_sandbox/notifications``:
``endpoint`` (register, GET to read), ``challenge``, ``account-deletion`` (send one for
``{"user_id": ...}``), ``rotate-key``, ``sent``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ebay_sandbox import responses, tokens
from ebay_sandbox.calls import Call, EbayRoute
from ebay_sandbox.state import API_SCOPE, SandboxError

if TYPE_CHECKING:
    from ebay_sandbox.apis import ApiRoutes
    from ebay_sandbox.app import Sandbox

TOPIC = "MARKETPLACE_ACCOUNT_DELETION"
UNKNOWN_KID_ERROR = 195001
DELIVERY_TIMEOUT = 10.0
SENT_LOG_LIMIT = 1000


def _one_line_pem(key: ec.EllipticCurvePrivateKey) -> str:
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    # eBay sends the PEM without line breaks.
    return "".join(line.strip() for line in pem.splitlines())


def challenge_response(challenge_code: str, verification_token: str, endpoint: str) -> str:
    """What eBay expects back from the endpoint's challenge."""
    digest = hashlib.sha256()
    digest.update(challenge_code.encode())
    digest.update(verification_token.encode())
    digest.update(endpoint.encode())
    return digest.hexdigest()


class NotificationHub:
    """Keys, the registered endpoint and what was sent; one per sandbox."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.kid = self.rotate_key()
        self.endpoint: str | None = None
        self.verification_token: str | None = None
        self.sent: deque[dict[str, Any]] = deque(maxlen=SENT_LOG_LIMIT)

    def reset(self) -> None:
        """Forget the endpoint and what was sent (the keys stay: caches elsewhere hold them)."""
        with self.lock:
            self.endpoint = None
            self.verification_token = None
            self.sent.clear()

    def rotate_key(self) -> str:
        """Sign with a new key from now on; earlier keys stay verifiable. Returns its kid."""
        kid = str(uuid.uuid4())
        with self.lock:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
            self.kid = kid
        return kid

    def public_key(self, kid: str) -> dict[str, str] | None:
        """``getPublicKey``'s body for a kid, or None when eBay would not know it."""
        key = self.keys.get(kid)
        if key is None:
            return None
        return {"key": _one_line_pem(key), "algorithm": "ECDSA", "digest": "SHA1"}

    def signature(self, body: bytes, kid: str | None = None) -> str:
        """The ``X-EBAY-SIGNATURE`` header for ``body``."""
        use = kid or self.kid
        der = self.keys[use].sign(body, ec.ECDSA(hashes.SHA1()))  # noqa: S303 - eBay's digest
        header = {
            "alg": "ecdsa",
            "kid": use,
            "signature": base64.b64encode(der).decode(),
            "digest": "SHA1",
        }
        return base64.b64encode(json.dumps(header, separators=(",", ":")).encode()).decode()

    def notification(
        self,
        user_id: str,
        username: str,
        eias_token: str,
        notification_id: str | None = None,
    ) -> tuple[bytes, str, str]:
        """A signed notification: (compact JSON body, signature header, notification id)."""
        now = datetime.now(UTC)
        identifier = notification_id or f"{uuid.uuid4()}_{uuid.uuid4()}"
        message = {
            "metadata": {"topic": TOPIC, "schemaVersion": "1.0", "deprecated": False},
            "notification": {
                "notificationId": identifier,
                "eventDate": responses.timestamp(now),
                "publishDate": responses.timestamp(now),
                "publishAttemptCount": 1,
                "data": {"username": username, "userId": user_id, "eiasToken": eias_token},
            },
        }
        body = json.dumps(message, separators=(",", ":")).encode()
        return body, self.signature(body), identifier


class NotificationRoutes:
    """The Notification API route and the control routes of one sandbox."""

    def __init__(self, sandbox: Sandbox, apis: ApiRoutes) -> None:
        self.sandbox = sandbox
        self.apis = apis
        self.hub: NotificationHub = sandbox.notifications

    def routes(self) -> list[Route]:
        """``getPublicKey`` (an eBay route: call log, faults) and the control routes."""
        public_key = EbayRoute(
            self.sandbox, "public_key", "rest", "notification", self.apis.identify_bearer, self.get
        )
        control = [
            ("/endpoint", self.endpoint, ["GET", "POST"]),
            ("/challenge", self.challenge, ["POST"]),
            ("/account-deletion", self.account_deletion, ["POST"]),
            ("/rotate-key", self.rotate, ["POST"]),
            ("/sent", self.sent, ["GET"]),
        ]
        return [
            Route("/commerce/notification/v1/public_key/{kid}", public_key, methods=["GET"]),
            *(
                Route(f"/_sandbox/notifications{path}", _guard(fn), methods=methods)
                for path, fn, methods in control
            ),
        ]

    # --- eBay's Notification API ------------------------------------------------------------

    async def get(self, call: Call) -> Response:
        """``GET /commerce/notification/v1/public_key/{kid}`` with an application token."""
        problem = self.apis._bearer_problem(call, user=False, scope=API_SCOPE)
        if problem is not None:
            return problem
        found = self.hub.public_key(str(call.request.path_params["kid"]))
        if found is None:
            call.outcome = str(UNKNOWN_KID_ERROR)
            return responses.json_ok(
                {
                    "errors": [
                        {
                            "errorId": UNKNOWN_KID_ERROR,
                            "domain": "API_NOTIFICATION",
                            "category": "REQUEST",
                            "message": "The specified key id is invalid.",
                            "longMessage": "The specified key id is invalid.",
                        }
                    ]
                },
                404,
            )
        call.outcome = "ok"
        return responses.json_ok(found)

    # --- control -----------------------------------------------------------------------------

    async def endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _body(request)
            url = body.get("url")
            token = body.get("verification_token")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise SandboxError("url must be an http:// or https:// URL")
            if not isinstance(token, str) or not token:
                raise SandboxError("verification_token is required")
            with self.hub.lock:
                self.hub.endpoint, self.hub.verification_token = url, token
            if body.get("verify", True):
                result = await self._challenge()
                if not result["verified"]:
                    with self.hub.lock:
                        self.hub.endpoint = self.hub.verification_token = None
                    return JSONResponse(
                        {"error": "the endpoint failed the challenge", **result}, 400
                    )
        return JSONResponse({"url": self.hub.endpoint, "kid": self.hub.kid})

    async def challenge(self, request: Request) -> Response:
        return JSONResponse(await self._challenge())

    async def _challenge(self) -> dict[str, Any]:
        url, token = self._registered()
        code = secrets.token_hex(16)
        expected = challenge_response(code, token, url)
        try:
            async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT) as http:
                answer = await http.get(url, params={"challenge_code": code})
        except httpx.HTTPError as exc:
            return {"verified": False, "status": None, "problem": type(exc).__name__}
        got = None
        try:
            parsed = answer.json()
            got = parsed.get("challengeResponse") if isinstance(parsed, dict) else None
        except ValueError:
            pass
        content_type = answer.headers.get("content-type", "")
        verified = (
            answer.status_code == 200 and got == expected and "application/json" in content_type
        )
        return {"verified": verified, "status": answer.status_code}

    async def account_deletion(self, request: Request) -> Response:
        """Send one notification for a user id (a sandbox seller's, or any other)."""
        body = await _body(request)
        user_id = body.get("user_id")
        if not isinstance(user_id, str) or not user_id:
            raise SandboxError("user_id is required")
        url, _token = self._registered()
        seller = self.sandbox.state.sellers.get(user_id)
        username = seller.username if seller else f"user_{user_id}"[:64]
        eias = seller.eias_token if seller else tokens.eias_token()
        notification_id = body.get("notification_id")
        payload, signature, identifier = self.hub.notification(
            user_id,
            username,
            eias,
            notification_id if isinstance(notification_id, str) else None,
        )
        status: int | None = None
        problem = None
        try:
            async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT) as http:
                answer = await http.post(
                    url,
                    content=payload,
                    headers={"Content-Type": "application/json", "X-EBAY-SIGNATURE": signature},
                )
            status = answer.status_code
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        record = {
            "notification_id": identifier,
            "user_id": user_id,
            "status": status,
            "acknowledged": status in (200, 201, 202, 204),
            "at": time.time(),
        }
        if problem:
            record["problem"] = problem
        self.hub.sent.append(record)
        return JSONResponse(record)

    async def rotate(self, request: Request) -> Response:
        return JSONResponse({"kid": self.hub.rotate_key()})

    async def sent(self, request: Request) -> Response:
        return JSONResponse({"sent": list(self.hub.sent)})

    def _registered(self) -> tuple[str, str]:
        with self.hub.lock:
            url, token = self.hub.endpoint, self.hub.verification_token
        if url is None or token is None:
            raise SandboxError("no endpoint is registered: POST /_sandbox/notifications/endpoint")
        return url, token


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


def _guard(endpoint: Any) -> Any:
    async def guarded(request: Request) -> Response:
        try:
            response: Response = await endpoint(request)
        except SandboxError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return response

    return guarded
