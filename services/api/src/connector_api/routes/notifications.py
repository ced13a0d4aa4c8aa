"""eBay Marketplace Account Deletion notifications: public (eBay calls them), no bearer token.

``GET`` answers eBay's endpoint challenge; ``POST`` receives a signed notification. Both are
rate limited per process; the POST body is limited to 64 KiB here, whatever the middleware does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse

from connector_api.deps import StateDep
from connector_api.schemas import ChallengeAnswer, ErrorBody
from connector_api.settings import DELETION_PATH as PATH

router = APIRouter(tags=["ebay notifications"])


def _errors(*codes: int) -> dict[int | str, dict[str, object]]:
    text = {
        400: "Signed by eBay, but not a marketplace account deletion.",
        412: "Missing, malformed or wrong signature, or a key eBay does not know: nothing "
        "was changed.",
        413: "The body is larger than 64 KiB.",
        429: "Too many requests; see Retry-After.",
        503: "Not configured, or eBay's signing key cannot be fetched now; retry later.",
    }
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}


@router.get(PATH, response_model=ChallengeAnswer, responses=_errors(429, 503))
async def deletion_challenge(
    state: StateDep,
    challenge_code: Annotated[str, Query(min_length=1, max_length=512)],
) -> JSONResponse:
    """eBay's endpoint check: ``hex(SHA-256(challenge_code + verification token + endpoint))``."""
    answer = state.deletion.challenge(challenge_code)
    # A JSON library writes it (no BOM), as eBay asks; Content-Type: application/json.
    return JSONResponse({"challengeResponse": answer})


@router.post(
    PATH,
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_errors(400, 412, 413, 429, 503),
)
async def deletion_notification(request: Request, state: StateDep) -> Response:
    """A Marketplace Account Deletion notification: 204 once the seller's data is purged (or
    was already, for a repeated notification), 412 when the signature does not hold."""
    await state.deletion.receive(request)
    state.wake_relay()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
