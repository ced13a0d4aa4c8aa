"""How many token refreshes per second the eBay sandbox serves on one core.

The sandbox runs as its own process (``connector sandbox``) pinned to CPU 0 with ``taskset``;
this process, pinned to CPU 1, seeds sellers and refresh tokens through the control API, then
drives ``POST /identity/v1/oauth2/token`` (grant ``refresh_token``) from many keep-alive
connections with a minimal asyncio HTTP/1.1 client (httpx itself would be the bottleneck).
Every answer is checked: a refresh only counts if it is HTTP 200.

    .venv/bin/python -m bench.bench_sandbox [--seconds 10] [--connections 64] [--sellers 200]
        [--state-file PATH]   # persist the sandbox's state there, as `make run` does

Besides the rate, it reports the sandbox process's CPU time per refresh (user + system, read
from /proc), which other load on the machine disturbs much less than the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

from connector_devstack.embedded import free_port

CLIENT_ID = "bench-app"
CLIENT_SECRET = "bench-secret-not-for-production"  # a throwaway app in a local sandbox
RU_NAME = "bench-runame"
SCOPES = "https://api.ebay.com/oauth/api_scope https://api.ebay.com/oauth/api_scope/sell.account"


def _pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu)]
    return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_sandbox(port: int, state_file: str | None = None) -> subprocess.Popen[bytes]:
    """The sandbox on CPU 0, as ``connector sandbox`` runs it."""
    argv = [
        *_pin(0),
        sys.executable,
        "-m",
        "connector_cli",
        "sandbox",
        "--port",
        str(port),
        "--client-id",
        CLIENT_ID,
        "--ru-name",
        RU_NAME,
        "--accept-url",
        "http://127.0.0.1:9/callback",
        "--no-demo-sellers",
        *(["--state-file", state_file] if state_file else []),
    ]
    env = {**os.environ, "EBAY_SANDBOX_CLIENT_SECRET": CLIENT_SECRET}
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the sandbox exited during start-up")
        try:
            httpx.get(f"{base}/_sandbox/health", timeout=1).raise_for_status()
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("the sandbox did not start")


def seed_refresh_tokens(base: str, sellers: int) -> list[str]:
    """One consented seller per refresh token, through the control API and a code exchange."""
    tokens: list[str] = []
    with httpx.Client(base_url=base, timeout=10) as http:
        for index in range(sellers):
            username = f"bench_seller_{index}"
            http.post("/_sandbox/sellers", json={"username": username, "site_id": 3})
            code = http.post(
                "/_sandbox/consent",
                json={"seller": username, "client_id": CLIENT_ID, "scope": SCOPES},
            ).json()["code"]
            answer = http.post(
                "/identity/v1/oauth2/token",
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": RU_NAME},
                auth=(CLIENT_ID, CLIENT_SECRET),
            )
            tokens.append(answer.json()["refresh_token"])
    return tokens


def refresh_request(port: int, refresh_token: str) -> bytes:
    body = urlencode(
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": SCOPES}
    ).encode()
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    head = (
        "POST /identity/v1/oauth2/token HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Basic {basic}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length")
    )
    body = await reader.readexactly(length)
    if status == 200 and b'"access_token"' not in body:
        return 0
    return status


async def drive(
    port: int, requests: list[bytes], seconds: float, connections: int
) -> dict[str, float]:
    """Keep ``connections`` keep-alive connections busy for ``seconds``; count answers."""
    ok = failed = 0
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        index = offset
        try:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                writer.write(requests[index % len(requests)])
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                if status == 200:
                    ok += 1
                else:
                    failed += 1
                index += connections
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "refreshes": ok,
        "failed": failed,
        "seconds": round(elapsed, 2),
        "refreshes_per_second": round(ok / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else 0.0,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sellers", type=int, default=200)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--state-file", help="persist the sandbox state in this SQLite file")
    args = parser.parse_args()
    if pin := _pin(1):
        os.sched_setaffinity(0, {int(pin[-1])})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_sandbox(port, args.state_file)
    try:
        wait_ready(base, process)
        tokens = seed_refresh_tokens(base, args.sellers)
        requests = [refresh_request(port, token) for token in tokens]
        asyncio.run(drive(port, requests, args.warmup, args.connections))
        cpu_before = cpu_seconds(process.pid)
        measured = asyncio.run(drive(port, requests, args.seconds, args.connections))
        cpu_used = cpu_seconds(process.pid) - cpu_before
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    result: dict[str, object] = {
        **measured,
        "sandbox_cpu_us_per_refresh": round(cpu_used * 1e6 / max(measured["refreshes"], 1), 1),
        "state_file": bool(args.state_file),
        "connections": args.connections,
        "sellers": args.sellers,
        "sandbox_cpu": "0 (taskset)" if _pin(0) else "unpinned",
        "load_cpu": "1 (sched_setaffinity)" if _pin(1) else "unpinned",
        "python": platform.python_version(),
        "cpus": os.cpu_count() or 0,
    }
    print(json.dumps(result))
    return 0 if measured["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
