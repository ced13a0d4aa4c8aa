"""P1: token refreshes per second end to end, and the CPU each costs, against same-run baselines.

Everything is real and runs as its own process: embedded PostgreSQL (fsync on) and NATS
JetStream, the eBay sandbox (``connector sandbox``) answering the token endpoint after
``--latency-ms``, one ``connector scheduler`` and ``--refreshers`` ``connector token-refresher``
replicas. In the same run, on the same sandbox:

* ``sandbox_per_s``: what the sandbox serves at most (no latency, 64 keep-alive connections);
* ``loop_per_s``: a plain sequential loop of refresh calls, as eBay's own Python sample client
  makes them (``requests.post`` with a form body, no database, no events), at ``--latency-ms``;
* the pipeline: every account made due at once; ``refreshes_per_s`` is accounts / (from "made
  due" to the last refresh written), which includes the scheduler noticing (tick 0.25 s);
  ``sustained_per_s`` is from the first to the last refresh written.

CPU per refresh is read from ``/proc`` for every process of the run (refreshers, scheduler,
sandbox, PostgreSQL, NATS) between "made due" and "all written"; the benchmark's own polling is
listed apart. Checked afterwards: every account refreshed once (``lost``: not refreshed,
``double``: its token written more than once or more than one ``token.refreshed`` event), and
``repeated``: accounts eBay refreshed more than once (from the sandbox's call log).

    make bench-refresh ARGS="--accounts 2000 --refreshers 2 --latency-ms 20"

The last line printed is one JSON object; the run rewrites its section of docs/benchmarks.md
(``--no-doc`` to leave it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import requests

from bench.bench_sandbox import drive, refresh_request
from bench.cluster import CLIENT_ID, CLIENT_SECRET, SCOPES, Cluster, running_cluster
from bench.cpu import cpu_by_role
from bench.report import machine, rewrite_section, table
from connector_common.logs import configure_logging

TICK_SECONDS = "0.25"


def sandbox_ceiling(cluster: Cluster, seconds: float) -> float:
    """Refreshes per second the sandbox serves at most (no latency fault)."""
    port = int(cluster.sandbox_url.rsplit(":", 1)[1])
    requests_ = [refresh_request(port, token) for token in cluster.refresh_tokens[:500]]
    asyncio.run(drive(port, requests_, 0.5, 64))
    measured = asyncio.run(drive(port, requests_, seconds, 64))
    return float(measured["refreshes_per_second"])


def sequential_loop(cluster: Cluster, seconds: float) -> float:
    """eBay's Python sample client's way: one ``requests.post`` after another."""
    url = f"{cluster.sandbox_url}/identity/v1/oauth2/token"
    tokens = cluster.refresh_tokens
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or done < 20:
        response = requests.post(
            url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens[done % len(tokens)],
                "scope": " ".join(SCOPES),
            },
            auth=(CLIENT_ID, CLIENT_SECRET),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
        )
        if response.status_code != 200 or "access_token" not in response.json():
            raise SystemExit(f"the loop's refresh failed: {response.status_code}")
        done += 1
    return done / (time.perf_counter() - started)


def _dsn(cluster: Cluster) -> str:
    return cluster.database_url.replace("postgresql+psycopg://", "postgresql://")


def run_pipeline(
    cluster: Cluster,
    accounts: int,
    refreshers: int,
    concurrency: int | None,
    timeout: float,
    extra_env: dict[str, str],
) -> dict[str, Any]:
    """Start the services idle, make every account due, wait until all are written."""
    env = {"CONNECTOR_PIPELINE__SCHEDULER_TICK_SECONDS": TICK_SECONDS, **extra_env}
    if concurrency:
        env["CONNECTOR_WORKER__CONCURRENCY"] = str(concurrency)
    workers = [cluster.start_service("token-refresher", **env) for _ in range(refreshers)]
    scheduler = cluster.start_service("scheduler", **env)
    cluster.ready(*workers, scheduler)
    time.sleep(1.0)  # let start-up settle: its CPU is not the refreshes'
    profilers = _profile(cluster, [*workers, scheduler])
    with psycopg.connect(_dsn(cluster), autocommit=True) as db:
        before: dict[Any, int] = dict(
            db.execute("SELECT account_id, version FROM ebay_tokens").fetchall()
        )
        cpu_before = cpu_by_role()
        made_due = db.execute(
            "UPDATE ebay_tokens SET access_expires_at = now() + interval '1 minute', "
            "refresh_requested_at = NULL, retry_at = NULL RETURNING extract(epoch FROM now())"
        ).fetchone()
        assert made_due is not None
        t0 = float(made_due[0])
        deadline = time.monotonic() + timeout
        done = 0
        while done < accounts and time.monotonic() < deadline:
            time.sleep(0.05)
            row = db.execute(
                "SELECT count(*) FROM ebay_tokens WHERE last_refreshed_at >= to_timestamp(%s)",
                (t0,),
            ).fetchone()
            done = int(row[0]) if row else 0
        cpu_after = cpu_by_role()
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        first, last = db.execute(
            "SELECT extract(epoch FROM min(last_refreshed_at)), "
            "extract(epoch FROM max(last_refreshed_at)) FROM ebay_tokens "
            "WHERE last_refreshed_at >= to_timestamp(%s)",
            (t0,),
        ).fetchone() or (None, None)
        _wait_outbox_published(db, t0)
        after: dict[Any, int] = dict(
            db.execute("SELECT account_id, version FROM ebay_tokens").fetchall()
        )
        events = Counter(
            r[0]
            for r in db.execute(
                "SELECT payload::jsonb->>'account_id' FROM outbox "
                "WHERE subject LIKE '%%.token.refreshed' AND created_at >= to_timestamp(%s)",
                (t0,),
            ).fetchall()
        )
    cluster.stop_services()
    calls = cluster.calls("token", since=t0)
    # Refresh grants only (a scheduler also takes an application token for eBay's limits).
    granted = Counter(
        c["seller"] for c in calls if c["status"] == 200 and c.get("outcome") == "refreshed"
    )
    lost = sum(1 for a, v in after.items() if v == before[a])
    double_writes = sum(1 for a, v in after.items() if v > before[a] + 1)
    double_events = sum(1 for n in events.values() if n > 1)
    wall = (float(last) - t0) if last else float("inf")
    span = (float(last) - float(first)) if first and last else float("inf")
    cpu = {
        role: round((cpu_after.get(role, 0.0) - cpu_before.get(role, 0.0)) * 1000 / accounts, 3)
        for role in ("token-refresher", "scheduler", "sandbox", "postgres", "nats-server")
    }
    return {
        "refreshes_per_s": round(accounts / wall, 1),
        "sustained_per_s": round((accounts - 1) / span, 1) if span > 0 else None,
        "seconds": round(wall, 3),
        "cpu_ms_per_refresh": round(sum(cpu.values()), 3),
        "cpu_ms_by_role": cpu,
        "benchmark_polling_cpu_ms_per_refresh": round(
            (cpu_after.get("benchmark", 0) - cpu_before.get("benchmark", 0)) * 1000 / accounts, 3
        ),
        "lost": lost,
        "double": double_writes + double_events,
        "events": sum(events.values()),
        "repeated": sum(1 for n in granted.values() if n > 1),
        "refresh_calls": len(calls),
    }


def _profile(cluster: Cluster, procs: list[Any]) -> list[subprocess.Popen[bytes]]:
    """``BENCH_PROFILE=DIR``: py-spy records every service (collapsed stacks) during the run."""
    folder = os.environ.get("BENCH_PROFILE")
    spy = shutil.which("py-spy") or str(
        Path(__file__).resolve().parent.parent / ".tools/bin/py-spy"
    )
    if not folder:
        return []
    Path(folder).mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(p.process.pid),
                "--format",
                "raw",
                "--rate",
                "250",
                "--nonblocking",
                "-o",
                f"{folder}/{p.name}.txt",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in procs
    ]


def _wait_outbox_published(db: psycopg.Connection[Any], t0: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL AND "
            "created_at >= to_timestamp(%s)",
            (t0,),
        ).fetchone()
        if row is not None and row[0] == 0:
            return
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--refreshers", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, help="per refresher (default: its own)")
    parser.add_argument("--runs", type=int, default=1, help="pipeline runs (best one reported)")
    parser.add_argument("--loop-seconds", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--no-fsync", dest="fsync", action="store_false")
    parser.add_argument("--no-doc", dest="doc", action="store_false", help="leave docs alone")
    parser.add_argument("--section", default="refresh", help="its section of docs/benchmarks.md")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for services")
    args = parser.parse_args(argv)
    configure_logging("WARNING", "console")  # the numbers only
    extra_env = dict(item.split("=", 1) for item in args.env)
    with (
        tempfile.TemporaryDirectory(prefix="bench-refresh-") as tmp,
        running_cluster(Path(tmp), fsync=args.fsync) as cluster,
    ):
        seeding = time.monotonic()
        cluster.seed(args.accounts)
        print(f"seeded {args.accounts} accounts in {time.monotonic() - seeding:.1f}s", flush=True)
        sandbox_per_s = sandbox_ceiling(cluster, 3.0)
        instant_loop = sequential_loop(cluster, args.loop_seconds)
        if args.latency_ms > 0:
            cluster.fault("token", "latency", latency_ms=args.latency_ms)
        loop_per_s = sequential_loop(cluster, args.loop_seconds)
        runs = []
        for index in range(args.runs):
            run = run_pipeline(
                cluster, args.accounts, args.refreshers, args.concurrency, args.timeout, extra_env
            )
            print(json.dumps({"run": index + 1, **run}), flush=True)
            runs.append(run)
    best = max(runs, key=lambda r: r["refreshes_per_s"])
    result = {
        "refreshes_per_s": best["refreshes_per_s"],
        "cpu_ms_per_refresh": best["cpu_ms_per_refresh"],
        "loop_per_s": round(loop_per_s, 1),
        "loop_no_latency_per_s": round(instant_loop, 1),
        "sandbox_per_s": round(sandbox_per_s, 1),
        "latency_ms": args.latency_ms,
        "accounts": args.accounts,
        "refreshers": args.refreshers,
        "lost": sum(r["lost"] for r in runs),
        "double": sum(r["double"] for r in runs),
        "repeated": sum(r["repeated"] for r in runs),
        "vs_loop": round(best["refreshes_per_s"] / loop_per_s, 1),
        "vs_loop_no_latency": round(best["refreshes_per_s"] / instant_loop, 2),
        "sustained_per_s": best["sustained_per_s"],
        "cpu_ms_by_role": best["cpu_ms_by_role"],
        "runs": [r["refreshes_per_s"] for r in runs],
        **machine(),
    }
    if args.doc:
        rewrite_section(args.section, _markdown(result, args))
    print(json.dumps(result), flush=True)
    return 0 if result["lost"] == 0 and result["double"] == 0 else 1


def _markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [
        ("pipeline, end to end", f"**{result['refreshes_per_s']:,}**", "—"),
        ("pipeline, first to last write", f"{result['sustained_per_s']:,}", "—"),
        (
            f"sequential `requests.post` loop, eBay at {args.latency_ms:g} ms",
            f"{result['loop_per_s']:,}",
            f"{result['vs_loop']}x",
        ),
        (
            "the same loop, eBay answering at once",
            f"{result['loop_no_latency_per_s']:,}",
            f"{result['vs_loop_no_latency']}x",
        ),
        ("the sandbox alone (64 connections, no latency)", f"{result['sandbox_per_s']:,}", "—"),
    ]
    roles = result["cpu_ms_by_role"]
    cpu_rows = [(role, f"{ms:.3f}") for role, ms in roles.items()]
    cpu_rows.append(("**all processes**", f"**{result['cpu_ms_per_refresh']:.3f}**"))
    return "\n\n".join(
        [
            f"**Last run ({result['date']})**: {result['accounts']:,} accounts, "
            f"{result['refreshers']} refreshers, eBay (the sandbox) answering in "
            f"{args.latency_ms:g} ms, {result['cpus']} CPUs ({result['cpu_model']}), "
            f"load average before the run {result['load_average']}. "
            f"Lost: {result['lost']}, double: {result['double']}, accounts eBay refreshed "
            f"twice: {result['repeated']}. Runs: {result['runs']}.",
            table(rows, ("what", "refreshes/s", "pipeline ÷ it")),
            'CPU per refresh (ms), between "made due" and "all written":',
            table(cpu_rows, ("process", "ms per refresh")),
            '```sh\nmake bench-refresh ARGS="'
            + f"--accounts {args.accounts} --refreshers {args.refreshers} "
            + f'--latency-ms {args.latency_ms:g}"\n```',
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
