"""The API's read path under load: an open-loop generator against a real ``connector api``
process, side by side with a bare FastAPI route served by uvicorn with the same settings.

Embedded PostgreSQL (fsync on), migrated and seeded like ``bench/bench_api.py`` (one org of
``--accounts`` accounts, 20 others of 1,000; 200 health checks on the measured account), then:

1. **Paced** (open loop): for each route in ``--routes``, ``--rps`` requests a second for
   ``--seconds``, each sent at its scheduled time whether or not earlier ones were answered;
   latency is measured from that scheduled time (no coordinated omission). The server's CPU
   per request comes from ``/proc/<pid>/stat`` of the API process (and of PostgreSQL's,
   reported apart).
2. **Saturation** (closed loop, ``--concurrency`` connections for ``--saturate-seconds``): the
   bare route, then the list route, in the same run: requests a second each one completes.

Only 127.0.0.1; every phase is bounded in time and in requests. The client is aiohttp (its CPU
per request is a fifth of httpx's, see "Why aiohttp" in docs/benchmarks.md), so the generator
takes as little as possible of the two cores from the servers. Prints one JSON line last and
rewrites the ``api-load`` section of docs/benchmarks.md.

    .venv/bin/python -m bench.bench_api_load [--rps 200] [--seconds 20] [--accounts 1000]
        [--routes list,get,health] [--profile out.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr
from sqlalchemy import text

from bench.bench_api import seed
from bench.cluster import wait_http
from bench.cpu import cpu_by_role
from bench.report import machine, rewrite_section, table
from connector_api.devtokens import mint_dev_token
from connector_common import migrate
from connector_common.db.engine import create_engine
from connector_common.settings import DatabaseSettings
from connector_devstack.embedded import EmbeddedPostgres, free_port

SECRET = "bench-" + "s" * 40
HEALTH_SQL = """
INSERT INTO health_checks (account_id, checked_at, outcome, latency_ms, http_status, api)
SELECT :account, now() - i * interval '15 minutes',
    CASE WHEN i % 10 = 0 THEN 'unhealthy' ELSE 'healthy' END, 100 + i, 200, 'trading'
FROM generate_series(1, 200) AS i
"""
MAX_REQUESTS = 100_000  # per phase, whatever --rps and --seconds say
TIMEOUT_SECONDS = 30.0


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def spawn(name: str, argv: list[str], env: dict[str, str], log: Path, port: int) -> Server:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(name, process, port)


def api_env(database_url: str, extra: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {
            "CONNECTOR_ENV": "development",
            "CONNECTOR_LOG_LEVEL": "INFO",  # the access log line of every request, as deployed
            "CONNECTOR_LOG_FORMAT": "json",
            "CONNECTOR_DATABASE__URL": database_url,
            # NATS is not started: the API serves without it (events wait in the outbox).
            "CONNECTOR_NATS__URL": f"nats://127.0.0.1:{free_port()}",
            "CONNECTOR_TOKEN_KEYS": f"k1:{base64.b64encode(os.urandom(32)).decode()}",
            "CONNECTOR_EBAY__LOCAL_BASE_URL": "http://127.0.0.1:9",
            "CONNECTOR_API__JWT__DEV_SECRET": SECRET,
            # The limits stay on (their cost is measured), far above what the bench sends.
            "CONNECTOR_API__RATE_LIMITS__PER_ADDRESS_PER_MINUTE": "100000000",
            "CONNECTOR_API__RATE_LIMITS__PER_ORG_PER_MINUTE": "100000000",
        }
    )
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def paced(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], rps: float, seconds: float
) -> dict[str, Any]:
    """Open loop: request i leaves at start + i / rps; latency from that moment."""
    loop = asyncio.get_running_loop()
    count = min(MAX_REQUESTS, int(rps * seconds))
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    last_done = 0.0

    async def one(at: float) -> None:
        nonlocal last_done
        try:
            async with http.get(url, headers=headers, timeout=timeout) as answer:
                await answer.read()
                statuses[str(answer.status)] += 1
                if answer.status == 200:
                    latencies.append((loop.time() - at) * 1000)
        except (aiohttp.ClientError, TimeoutError):
            statuses["error"] += 1
        last_done = max(last_done, loop.time())

    start = loop.time() + 0.05
    tasks = []
    for i in range(count):
        at = start + i / rps
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    ordered = sorted(latencies)
    elapsed = max(last_done - start, count / rps)
    return {
        "rps_asked": rps,
        "requests": count,
        "achieved": round(len(ordered) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered), 2) if ordered else None,
        "p99_ms": round(percentile(ordered, 0.99), 2) if ordered else None,
        "max_ms": round(ordered[-1], 2) if ordered else None,
        "statuses": dict(statuses),
    }


async def saturate(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` requests in flight for ``seconds``; completed per second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    done: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)

    async def worker() -> None:
        while loop.time() < deadline and sum(done.values()) < MAX_REQUESTS:
            try:
                async with http.get(url, headers=headers, timeout=timeout) as answer:
                    await answer.read()
                    done[str(answer.status)] += 1
            except (aiohttp.ClientError, TimeoutError):
                done["error"] += 1

    started = loop.time()
    client_cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = loop.time() - started
    return {
        "rps": round(done["200"] / elapsed, 1),
        "statuses": dict(done),
        "client_cpu_ms_per_request": round(
            (time.process_time() - client_cpu) * 1000 / max(1, sum(done.values())), 3
        ),
    }


def _profile(pid: int, out: str, seconds: float) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).parent / "py-spy"
    fmt = (
        "speedscope" if out.endswith(".json") else ("raw" if out.endswith(".txt") else "flamegraph")
    )
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--format",
            fmt,
            "--output",
            out,
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def settle(server: Server, limit_seconds: float = 90.0) -> None:
    """Until the server is idle (under 5 % of a core over 0.5 s), so that a phase does not pay
    for the backlog of the one before (abandoned requests are still served). Bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_seconds
    while loop.time() < deadline:
        before = server.cpu_seconds()
        await asyncio.sleep(0.5)
        if server.cpu_seconds() - before < 0.025:
            return


async def drive(
    api: Server, bare: Server, routes: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    auth = {
        "Authorization": "Bearer "
        + mint_dev_token(SECRET, org="bench-big", role="viewer", subject="bench")
    }
    connector = aiohttp.TCPConnector(limit=args.connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        for url in routes.values():  # warm-up: connections, caches, first-request costs
            await saturate(http, api.url + url, auth, 8, 2)
        await saturate(http, bare.url + "/hello", {}, 8, 1)
        results: dict[str, Any] = {}
        for name, path in routes.items():
            headers = auth if name != "healthz" else {}
            api_cpu, pg_cpu = api.cpu_seconds(), cpu_by_role().get("postgres", 0.0)
            profiler = None
            if args.profile and name == "list":
                profiler = _profile(api.process.pid, args.profile, args.seconds)
            await settle(api)
            result = await paced(http, api.url + path, headers, args.rps, args.seconds)
            if profiler is not None:
                profiler.wait(60)
            handled = max(1, sum(result["statuses"].values()))
            result["cpu_ms_per_request"] = round((api.cpu_seconds() - api_cpu) * 1000 / handled, 3)
            # Approximate: a PostgreSQL process that exits meanwhile takes its CPU with it.
            pg_used = max(0.0, cpu_by_role().get("postgres", 0.0) - pg_cpu)
            result["postgres_cpu_ms_per_request"] = round(pg_used * 1000 / handled, 3)
            results[name] = result
            print(f"  paced {name:<8} {json.dumps(result)}", flush=True)
        await settle(api)
        bare_cpu = bare.cpu_seconds()
        bare_paced = await paced(http, bare.url + "/hello", {}, args.rps, min(args.seconds, 10))
        bare_paced["cpu_ms_per_request"] = round(
            (bare.cpu_seconds() - bare_cpu) * 1000 / max(1, bare_paced["requests"]), 3
        )
        print(f"  paced bare     {json.dumps(bare_paced)}", flush=True)
        bare_sat = await saturate(
            http, bare.url + "/hello", {}, args.concurrency, args.saturate_seconds
        )
        print(f"  saturated bare {json.dumps(bare_sat)}", flush=True)
        await settle(api)
        api_sat = await saturate(
            http, api.url + routes["list"], auth, args.concurrency, args.saturate_seconds
        )
        print(f"  saturated list {json.dumps(api_sat)}", flush=True)
    return {"routes": results, "bare": bare_paced, "bare_sat": bare_sat, "api_sat": api_sat}


async def seed_health(url: str) -> str:
    engine = create_engine(DatabaseSettings(url=SecretStr(url)), "bench")
    async with engine.begin() as conn:
        account = await conn.scalar(
            text(
                "SELECT a.id FROM ebay_accounts a JOIN organisations o ON o.id = a.org_id "
                "WHERE o.external_id = 'bench-big' ORDER BY lower(a.house_name), a.id LIMIT 1"
            )
        )
        await conn.execute(text(HEALTH_SQL), {"account": account})
        await conn.execute(text("ANALYZE health_checks"))
    await engine.dispose()
    return str(account)


def report(line: dict[str, Any], args: argparse.Namespace) -> None:
    rows = []
    for name, r in line["routes"].items():
        rows.append(
            [
                f"`{ROUTE_LABELS[name]}`",
                f"{r['rps_asked']:.0f}/s",
                f"{r['achieved']:.0f}/s",
                f"{r['p50_ms']} ms",
                f"{r['p99_ms']} ms",
                f"{r['cpu_ms_per_request']} ms",
                f"{r['postgres_cpu_ms_per_request']} ms",
            ]
        )
    b = line["bare"]
    rows.append(
        [
            "bare FastAPI route",
            f"{b['rps_asked']:.0f}/s",
            f"{b['achieved']:.0f}/s",
            f"{b['p50_ms']} ms",
            f"{b['p99_ms']} ms",
            f"{b['cpu_ms_per_request']} ms",
            "—",
        ]
    )
    m = line["machine"]
    body = (
        f"Last `make bench-api` run ({m['date']}, {m['cpus']} CPUs {m['cpu_model']}, Python "
        f"{m['python']}, load average before the run {m['load_average']}, after "
        f"{line['load_after']}): org of {args.accounts:,} accounts, {args.seconds:.0f} s per "
        f"route, idle RSS {line['api_rss_mb']} MB (API) / {line['bare_rss_mb']} MB (bare).\n\n"
        + table(
            rows,
            ["route", "asked", "achieved", "p50", "p99", "API CPU / request", "PostgreSQL CPU"],
        )
        + f"\n\nAt saturation ({args.concurrency} connections, {args.saturate_seconds:.0f} s "
        f"each): bare route {line['bare_rps_at_saturation']}/s, list route "
        f"{line['api_rps_at_saturation']}/s "
        f"({line['api_rps_at_saturation'] / max(1, line['bare_rps_at_saturation']):.0%} of the "
        "bare route).\n"
    )
    rewrite_section(args.section, body)


ROUTE_LABELS = {
    "list": "GET /ebay-accounts (50 per page)",
    "get": "GET /ebay-accounts/{id}",
    "health": "GET /ebay-accounts/{id}/health-checks",
    "healthz": "GET /healthz",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--routes", default="list,get,health,healthz")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--saturate-seconds", type=float, default=8.0)
    parser.add_argument(
        "--profile",
        help="py-spy output of the API during the paced list (.txt raw, .json speedscope, else "
        "svg); py-spy is not a dependency: install it into the venv first",
    )
    parser.add_argument("--api-env", action="append", default=[], help="KEY=VALUE for the API")
    parser.add_argument("--section", default="api-load", help="docs/benchmarks.md section")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite the section")
    args = parser.parse_args()
    if args.rps <= 0 or args.seconds <= 0:
        parser.error("--rps and --seconds must be positive")
    before = machine()
    print(f"load average {before['load_average']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-api-load-") as tmp:
        root = Path(tmp)
        postgres = EmbeddedPostgres(root / "pg")
        postgres.start()
        servers: list[Server] = []
        try:
            migrate.upgrade(postgres.url, "head")
            started = time.perf_counter()
            asyncio.run(seed(postgres.url, args.accounts))
            account = asyncio.run(seed_health(postgres.url))
            print(f"seeded in {time.perf_counter() - started:.1f} s", flush=True)
            api_port, bare_port = free_port(), free_port()
            env = api_env(postgres.url, args.api_env)
            servers.append(
                spawn(
                    "api",
                    ["-m", "connector_cli", "api", "--port", str(api_port)],
                    env,
                    root / "api.log",
                    api_port,
                )
            )
            servers.append(
                spawn(
                    "bare",
                    ["-m", "bench.bare_app", "--port", str(bare_port)],
                    env,
                    root / "bare.log",
                    bare_port,
                )
            )
            api, bare = servers
            try:
                wait_http(f"{api.url}/healthz", 60, api.process)
            except RuntimeError:
                print((root / "api.log").read_text()[-3000:], file=sys.stderr)
                raise
            wait_http(f"{bare.url}/hello", 60, bare.process)
            rss = (round(api.rss_mb(), 1), round(bare.rss_mb(), 1))
            paths = {
                "list": "/ebay-accounts?limit=50",
                "get": f"/ebay-accounts/{account}",
                "health": f"/ebay-accounts/{account}/health-checks?limit=50",
                "healthz": "/healthz",
            }
            chosen = [r.strip() for r in args.routes.split(",") if r.strip()]
            unknown = set(chosen) - set(paths)
            if unknown or "list" not in chosen:
                parser.error(f"--routes: list is required; known: {', '.join(paths)}")
            routes = {name: paths[name] for name in chosen}
            out = asyncio.run(drive(api, bare, routes, args))
            if api.process.poll() is not None:
                raise SystemExit(
                    "the API exited during the run:\n" + (root / "api.log").read_text()
                )
        finally:
            for server in servers:
                server.stop()
            postgres.stop()
    listed = out["routes"]["list"]
    line: dict[str, Any] = {
        "rps_asked": args.rps,
        "achieved": listed["achieved"],
        "p50_ms": listed["p50_ms"],
        "p99_ms": listed["p99_ms"],
        "cpu_ms_per_request": listed["cpu_ms_per_request"],
        "bare_rps_at_saturation": out["bare_sat"]["rps"],
        "api_rps_at_saturation": out["api_sat"]["rps"],
        "accounts": args.accounts,
        "seconds": args.seconds,
        "api_rss_mb": rss[0],
        "bare_rss_mb": rss[1],
        "routes": out["routes"],
        "bare": out["bare"],
        "saturation": {"bare": out["bare_sat"], "list": out["api_sat"]},
        "machine": before,
        "load_after": machine()["load_average"],
    }
    if not args.no_doc:
        report(line, args)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
