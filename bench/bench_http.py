"""The eBay client's HTTP layer: client CPU per refresh call, httpx vs httpcore vs aiohttp.

The sandbox runs as its own process (``connector sandbox``); this process makes ``--calls``
refresh-token POSTs (form body, Basic auth, JSON answer read and parsed) with 1, 8 and 32 calls
in flight through each library, after a warm-up, and reports its own CPU time per call
(``time.process_time``: the client's cost, whatever else the machine does).

    .venv/bin/python -m bench.bench_http [--calls 2000] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpcore
import httpx

from bench.bench_sandbox import (
    CLIENT_ID,
    CLIENT_SECRET,
    SCOPES,
    seed_refresh_tokens,
    start_sandbox,
    wait_ready,
)
from bench.report import machine
from connector_devstack.embedded import free_port

HEADERS = {
    "Authorization": "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode(),
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/json",
}
Call = Callable[[bytes], Awaitable[int]]


async def measure(call: Call, bodies: list[bytes], calls: int, in_flight: int) -> float:
    """Client CPU milliseconds per call."""
    gate = asyncio.Semaphore(in_flight)

    async def one(index: int) -> int:
        async with gate:
            return await call(bodies[index % len(bodies)])

    await asyncio.gather(*(one(i) for i in range(100)))  # warm-up: connections, caches
    started = time.process_time()
    statuses = await asyncio.gather(*(one(i) for i in range(calls)))
    spent = time.process_time() - started
    if any(status != 200 for status in statuses):
        raise SystemExit("a refresh failed")
    return spent * 1000 / calls


async def run(url: str, bodies: list[bytes], calls: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    levels = (1, 8, 32)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as client:

        async def via_httpx(body: bytes) -> int:
            answer = await client.post(url, headers=HEADERS, content=body, timeout=10)
            answer.json()
            return answer.status_code

        results["httpx"] = {str(n): await measure(via_httpx, bodies, calls, n) for n in levels}
    async with httpcore.AsyncConnectionPool(max_connections=200) as pool:
        raw = [(k.encode(), v.encode()) for k, v in HEADERS.items()]

        async def via_httpcore(body: bytes) -> int:
            answer = await pool.request("POST", url, headers=raw, content=body)
            json.loads(answer.content)
            return answer.status

        results["httpcore"] = {
            str(n): await measure(via_httpcore, bodies, calls, n) for n in levels
        }
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:

        async def via_aiohttp(body: bytes) -> int:
            async with session.post(url, data=body, headers=HEADERS) as answer:
                json.loads(await answer.read())
                return answer.status

        results["aiohttp"] = {str(n): await measure(via_aiohttp, bodies, calls, n) for n in levels}
    return {lib: {k: round(v, 3) for k, v in by.items()} for lib, by in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_sandbox(port)
    try:
        wait_ready(base, process)
        tokens = seed_refresh_tokens(base, 100)
        if args.latency_ms:
            httpx.post(
                f"{base}/_sandbox/faults",
                json={"route": "token", "kind": "latency", "latency_ms": args.latency_ms},
            ).raise_for_status()
        bodies = [
            urlencode({"grant_type": "refresh_token", "refresh_token": t, "scope": SCOPES}).encode()
            for t in tokens
        ]
        cpu = asyncio.run(run(f"{base}/identity/v1/oauth2/token", bodies, args.calls))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    result: dict[str, Any] = {
        "client_cpu_ms_per_call_by_calls_in_flight": cpu,
        "latency_ms": args.latency_ms,
        "calls": args.calls,
        **machine(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
