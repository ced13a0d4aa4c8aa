"""The eBay client's HTTP layer: one aiohttp session per process, explicit timeouts.

aiohttp rather than httpx for eBay calls because of cost, measured on this machine for our exact
call shape (a refresh-token POST, 20 ms answers, 32 in flight, client CPU per call): httpx 3.0 ms,
httpcore alone 2.9 ms (its pool's cost grows with the calls in flight: 0.9 ms at one), aiohttp
0.17 ms. The refresh path makes one such call per refresh, so this was most of its CPU.

Failures before an answer become :class:`HttpFailure` with a stable ``code`` (the transport turns
it into a ``TransientError``); an answer of any status is an :class:`Answer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

USER_AGENT = "ebay-connector/0.1"


@dataclass(frozen=True)
class Timeouts:
    """Seconds: connecting (socket), waiting for a free connection + connecting, reading."""

    connect: float
    pool: float
    read: float


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, fully read."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes


class HttpFailure(Exception):
    """No (complete) answer; ``code`` says why and whether the request may have been sent."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class HttpSession:
    """Pooled keep-alive connections, created on first use (inside the running loop)."""

    def __init__(self, *, max_connections: int = 200) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, keepalive_timeout=30, ttl_dns_cache=60
                ),
                headers={"User-Agent": USER_AGENT},
                # Cookies of one seller's call must never ride along another's.
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None,
        params: Mapping[str, str] | None,
        timeouts: Timeouts,
    ) -> Answer:
        """Send one request and read its whole answer."""
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.pool,
            sock_connect=timeouts.connect,
            sock_read=timeouts.read,
        )
        try:
            async with self._client().request(
                method,
                url,
                headers=dict(headers),
                data=content,
                params=params,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return Answer(response.status, response.headers, body)
        except aiohttp.ConnectionTimeoutError as exc:
            raise HttpFailure("connect_timeout", "connect timeout") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise HttpFailure("timeout", "timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            raise HttpFailure("connect_error", "cannot connect") from exc
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientOSError,
            aiohttp.ClientResponseError,
        ) as exc:
            raise HttpFailure("connection_dropped", "connection dropped") from exc
        except aiohttp.ClientError as exc:
            raise HttpFailure("transport_error", type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
