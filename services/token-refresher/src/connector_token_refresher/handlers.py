"""The refresh-work subscriber: parse, call the service, say how the message is settled."""

from __future__ import annotations

from pydantic import ValidationError

from connector_common.ebay import EbayClient
from connector_common.events import RefreshToken
from connector_common.tokens.store import RefreshOutcome, RefreshResult, TokenStore
from connector_common.worker.consumer import Delivery, Handler, Settle, describe
from connector_common.worker.runtime import WorkerContext
from connector_common.worker.summary import BatchSummary
from connector_token_refresher.service import refresh_account

# A little past the other holder's lease end, so its result is written before we look again.
BUSY_MARGIN_SECONDS = 0.5


def settle(result: RefreshResult) -> Settle:
    """Ack what is done or must not be retried; nak what may work later; dead-letter the rest."""
    if result.outcome is RefreshOutcome.UNKNOWN_ACCOUNT:
        return Settle.dead_letter(f"unknown account {result.account_id}")
    if result.outcome is RefreshOutcome.BUSY:
        return Settle.nak(
            (result.retry_in or 0.0) + BUSY_MARGIN_SECONDS, "another replica holds it"
        )
    if result.retryable:
        return Settle.nak(result.retry_in or 0.0, result.error or "refresh failed")
    return Settle.ack()


def make_handler(
    context: WorkerContext, client: EbayClient, store: TokenStore, summary: BatchSummary
) -> Handler:
    """The handler bound to this process's token store."""
    del context, client  # the store holds the client

    async def handle(body: bytes, delivery: Delivery) -> Settle:
        try:
            command = RefreshToken.model_validate_json(body)
        except ValidationError as exc:
            summary.add("malformed")
            return Settle.dead_letter(f"malformed refresh request: {describe(exc)}")
        result = await refresh_account(store, command)
        summary.add(result.outcome.value)
        return settle(result)

    return handle
