"""One logical eBay call: circuit breaker, bounded retries, one traced HTTP request per attempt.

Retries (tenacity): exponential backoff with jitter for transient failures; a ``Retry-After``
is waited out exactly (never earlier); attempts and total time are bounded, and when eBay asks
for a wait that does not fit in the remaining budget the :class:`RateLimited` error is raised at
once so the caller can postpone the work by that much instead of sleeping on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from connector_common.ebay.breaker import UNREAD, BreakerSnapshot, CircuitBreaker
from connector_common.ebay.errors import (
    CircuitOpen,
    EbayError,
    RateLimited,
    TransientError,
)
from connector_common.ebay.http import Answer, HttpFailure, HttpSession, Timeouts
from connector_common.ebay.instrumentation import CallSpec, EbayInstruments
from connector_common.ebay.models import CallMeta
from connector_common.ebay.pacing import ApiPacer
from connector_common.ebay.wire import HttpAnswer, ebay_headers, remaining_from_headers
from connector_common.logs import get_logger
from connector_common.settings import EbaySettings

log = get_logger(__name__)

T = TypeVar("T")
Parser = Callable[[HttpAnswer, CallMeta], T]

# Transport failures that happen before a request leaves: safe to retry even a single-use code.
NOT_SENT = frozenset({"connect_error", "connect_timeout", "pool_timeout"})


def retry_transient(error: BaseException) -> bool:
    """Retry policy of idempotent calls: transient failures and rate limits with a known wait."""
    if isinstance(error, TransientError):
        return True
    if isinstance(error, RateLimited):
        # Trading 518 is a daily quota: seconds of backoff cannot help, so it is not retried.
        return error.retry_after is not None or error.http_status == 429
    return False


def retry_unsent(error: BaseException) -> bool:
    """Retry policy of calls that must not run twice (authorization code exchange)."""
    return isinstance(error, TransientError) and error.error_code in NOT_SENT


_DESCRIPTIONS = {
    "connect_timeout": "connect timeout",
    "pool_timeout": "no free connection",
    "timeout": "timed out",
    "connect_error": "cannot connect",
    "connection_dropped": "connection dropped",
}


def _transport_error(failure: HttpFailure, meta: CallMeta) -> TransientError:
    what = f"eBay {meta.api} {meta.operation}"
    description = _DESCRIPTIONS.get(failure.code, str(failure))
    return TransientError(f"{what}: {description}", meta=meta, error_code=failure.code)


def _no_long_waits(
    retry: Callable[[BaseException], bool], longest: float
) -> Callable[[BaseException], bool]:
    """``retry``, except for rate limits asking for a wait longer than ``longest``."""

    def decide(error: BaseException) -> bool:
        if isinstance(error, RateLimited) and (error.retry_after or 0.0) > longest:
            return False
        return retry(error)

    return decide


class _StopOverBudget(stop_base):
    """Stop when the next wait would end past the total time budget."""

    def __init__(self, transport: EbayTransport) -> None:
        self.budget = transport.settings.max_retry_seconds

    def __call__(self, retry_state: RetryCallState) -> bool:
        elapsed = retry_state.seconds_since_start or 0.0
        return elapsed + retry_state.upcoming_sleep > self.budget


class EbayTransport:
    """Sends requests for :class:`~connector_common.ebay.client.EbayClient`."""

    def __init__(
        self,
        settings: EbaySettings,
        http: HttpSession,
        instruments: EbayInstruments,
        breaker: CircuitBreaker | None = None,
        *,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 8.0,
        on_call: Callable[[str, str], None] | None = None,
        rate_limit_wait: float | None = None,
    ) -> None:
        self.settings = settings
        # Told (api, operation) of every HTTP request that reached eBay or may have: the one
        # place the daily call budget is counted (connector_common.budget.recorder).
        self.on_call = on_call
        self.http = http
        self.instruments = instruments
        self.breaker = breaker
        self.pacer = ApiPacer()
        # A Retry-After longer than this is not slept on inside the call: RateLimited is raised
        # at once, so the caller postpones the work by exactly that (None: the retry budget).
        self.rate_limit_wait = rate_limit_wait
        self.timeouts = Timeouts(
            connect=settings.connect_timeout_seconds,
            pool=2 * settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
        )
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_seconds, max=max_backoff_seconds, jitter=backoff_seconds
        )

    async def call(
        self,
        spec: CallSpec,
        parse: Parser[T],
        *,
        headers: Mapping[str, str],
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        retry: Callable[[BaseException], bool] = retry_transient,
        breaker_state: BreakerSnapshot | object | None = UNREAD,
    ) -> T:
        """Make the call through the breaker (when it names an account) with retries."""
        if self.breaker is None or not spec.account_key:
            return await self._with_retries(spec, parse, headers, content, params, retry)
        try:
            permit = await self.breaker.acquire(spec.account_key, breaker_state)
        except CircuitOpen:
            self.instruments.count_short_circuit(spec)
            raise
        try:
            result = await self._with_retries(spec, parse, headers, content, params, retry)
        except Exception as error:
            await self.breaker.record(permit, error)
            raise
        await self.breaker.record(permit, None)
        return result

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return error.retry_after  # exactly what eBay asked for: never earlier
        return float(self._backoff(state))

    @staticmethod
    def _before_sleep(spec: CallSpec) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.info(
                "ebay_call_retry",
                api=spec.api,
                operation=spec.operation,
                account_key=spec.account_key,
                attempt=state.attempt_number,
                wait_seconds=round(state.upcoming_sleep, 3),
                error_kind=getattr(error, "kind", type(error).__name__),
                error_code=getattr(error, "error_code", None),
            )

        return before_sleep

    async def _with_retries(
        self,
        spec: CallSpec,
        parse: Parser[T],
        headers: Mapping[str, str],
        content: bytes | None,
        params: Mapping[str, str] | None,
        retry: Callable[[BaseException], bool],
    ) -> T:
        if self.rate_limit_wait is not None:
            retry = _no_long_waits(retry, self.rate_limit_wait)
        # The first attempt without tenacity's machinery: most calls succeed at once.
        try:
            return await self._attempt(spec, parse, headers, content, params, 1)
        except Exception as error:
            if self.settings.max_attempts <= 1 or not retry(error):
                raise
            first = error
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts) | _StopOverBudget(self),
            wait=self._wait,
            retry=retry_if_exception(retry),
            before_sleep=self._before_sleep(spec),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                if number == 1:
                    raise first  # already made above: tenacity decides what follows
                return await self._attempt(spec, parse, headers, content, params, number)
        raise AssertionError("tenacity ended without a result or an error")  # pragma: no cover

    async def _attempt(
        self,
        spec: CallSpec,
        parse: Parser[T],
        headers: Mapping[str, str],
        content: bytes | None,
        params: Mapping[str, str] | None,
        attempt: int,
    ) -> T:
        await self.pacer.wait(spec.api)
        with self.instruments.span(spec, attempt) as span:
            started = time.perf_counter()
            try:
                response = await self.http.request(
                    spec.method,
                    spec.url,
                    headers=headers,
                    content=content,
                    params=params,
                    timeouts=self.timeouts,
                )
            except HttpFailure as exc:
                latency = (time.perf_counter() - started) * 1000
                meta = CallMeta(spec.api, spec.operation, None, latency, attempt=attempt)
                error = _transport_error(exc, meta)
                if error.error_code not in NOT_SENT:
                    self._count(spec)  # sent: eBay may have counted it
                self.instruments.finish(span, spec, meta, error)
                raise error from None
            self._count(spec)
            meta = self._meta(spec, response, (time.perf_counter() - started) * 1000, attempt)
            try:
                result = parse(response, meta)
            except EbayError as error:
                self.instruments.finish(span, spec, meta, error)
                self._observe(spec, meta, error)
                raise
            self.instruments.finish(span, spec, meta, None)
            self._observe(spec, meta, None)
            return result

    def _count(self, spec: CallSpec) -> None:
        if self.on_call is not None:
            self.on_call(spec.api, spec.operation)

    def _observe(self, spec: CallSpec, meta: CallMeta, error: EbayError | None) -> None:
        limited = isinstance(error, RateLimited) and error.http_status == 429
        self.pacer.observe(
            spec.api,
            rate_limited=limited,
            retry_after=error.retry_after if isinstance(error, RateLimited) else None,
            remaining=meta.rate_limit_remaining,
        )

    @staticmethod
    def _meta(spec: CallSpec, response: Answer, latency: float, attempt: int) -> CallMeta:
        kept = ebay_headers(response.headers)
        return CallMeta(
            api=spec.api,
            operation=spec.operation,
            http_status=response.status_code,
            latency_ms=latency,
            request_id=kept.get("x-ebay-c-request-id") or kept.get("rlogid"),
            rlogid=kept.get("rlogid"),
            ebay_headers=kept,
            rate_limit_remaining=remaining_from_headers(kept),
            attempt=attempt,
        )
