"""CPU per request of the API's read routes, one request at a time, in-process.

The load benchmark (``bench/bench_api_load.py``) reads the server's CPU from /proc while other
work shares the machine's two cores; when they are busy, its numbers move by a factor of two.
This one calls the real app (lifespan, middleware, JWT, org resolution, SQL, encoding) through
httpx's ASGI transport, one request after another, and counts this process's CPU time
(``time.process_time``) per request minus the client's own share (measured on a bare route the
same way), so contention changes little. PostgreSQL's CPU is not included; uvicorn's HTTP
parsing (~0.1 ms) neither.

    .venv/bin/python -m bench.bench_api_cpu [--accounts 1000] [--requests 500] [--rounds 1]
        [--routes get]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from bench.bench_api import seed
from bench.bench_api_load import seed_health
from connector_api.app import create_app
from connector_api.devtokens import mint_dev_token
from connector_api.settings import ApiSettings
from connector_common import migrate
from connector_common.logs import configure_logging
from connector_common.settings import EbaySettings
from connector_common.telemetry import setup_telemetry
from connector_devstack.embedded import EmbeddedPostgres, free_port


async def cpu_per_request(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], n: int
) -> float:
    for _ in range(20):  # warm-up
        (await client.get(path, headers=headers)).raise_for_status()
    started = time.process_time()
    for _ in range(n):
        (await client.get(path, headers=headers)).raise_for_status()
    return (time.process_time() - started) * 1000 / n


async def run(url: str, account: str, args: argparse.Namespace) -> dict[str, float]:
    secret = "bench-" + "s" * 40
    settings = ApiSettings(
        env="development",
        database={"url": SecretStr(url)},
        nats={"url": f"nats://127.0.0.1:{free_port()}"},
        token_keys=SecretStr(f"k1:{base64.b64encode(os.urandom(32)).decode()}"),
        ebay=EbaySettings(local_base_url="http://127.0.0.1:9"),
        api={
            "jwt": {"dev_secret": SecretStr(secret)},
            # Counted as in production, never reached: thousands of requests in a few seconds.
            "rate_limits": {"per_address_per_minute": 10**7, "per_org_per_minute": 10**7},
        },
        log_level="INFO",
    )
    app = create_app(settings, telemetry=setup_telemetry(settings.otel, "bench", set_global=False))
    bare = FastAPI()

    @bare.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    auth = {
        "Authorization": "Bearer "
        + mint_dev_token(secret, org="bench-big", role="viewer", subject="bench")
    }
    routes = [
        ("list", "/ebay-accounts?limit=50"),
        ("get", f"/ebay-accounts/{account}"),
        ("health", f"/ebay-accounts/{account}/health-checks?limit=50"),
        ("healthz", "/healthz"),
    ]
    routes = [(name, path) for name, path in routes if not args.routes or name in args.routes]
    results: dict[str, float] = {}
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://b") as plain,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client,
    ):
        # Rounds interleave the routes; each keeps its lowest round (the least disturbed by
        # whatever else the machine runs).
        for _ in range(args.rounds):
            for name, value in [
                ("bare", await cpu_per_request(plain, "/hello", {}, args.requests)),
                *[
                    (name, await cpu_per_request(client, path, auth, args.requests))
                    for name, path in routes
                ],
            ]:
                results[name] = min(results.get(name, value), value)
    # The bare route's figure is mostly the client's (httpx) and the ASGI plumbing: subtract it
    # to get the app's own CPU.
    return {
        **{f"{k}_ms": round(v, 3) for k, v in results.items()},
        **{f"{k}_app_ms": round(v - results["bare"], 3) for k, v in results.items() if k != "bare"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1, help="keep each route's best round")
    parser.add_argument(
        "--routes",
        nargs="*",
        choices=("list", "get", "health", "healthz"),
        help="only these routes (e.g. to profile one with py-spy)",
    )
    args = parser.parse_args()
    # The access log goes where a deployment's would (stdout, JSON); here to /dev/null.
    with open(os.devnull, "w") as sink:
        configure_logging("INFO", "json", service="bench", stream=sink)
        with tempfile.TemporaryDirectory(prefix="bench-api-cpu-") as tmp:
            postgres = EmbeddedPostgres(Path(tmp) / "pg")
            postgres.start()
            try:
                migrate.upgrade(postgres.url, "head")
                asyncio.run(seed(postgres.url, args.accounts))
                account = asyncio.run(seed_health(postgres.url))
                line = asyncio.run(run(postgres.url, account, args))
            finally:
                postgres.stop()
    with open("/proc/loadavg") as f:
        line["load_average"] = [float(v) for v in f.read().split()[:3]]  # type: ignore[assignment]
    print(json.dumps(line))


if __name__ == "__main__":
    main()
