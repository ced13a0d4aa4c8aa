"""A pipeline process as Kubernetes runs it, while its dependencies are not there yet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from connector_devstack.embedded import free_port, nats_server_binary


@pytest.fixture(params=["nats down", "jetstream unavailable"])
def unusable_nats(request: pytest.FixtureRequest) -> Iterator[str]:
    """A NATS URL nobody listens on, or a NATS server without JetStream."""
    port = free_port()
    if request.param == "nats down":
        yield f"nats://127.0.0.1:{port}"
        return
    server = subprocess.Popen(
        [str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def test_a_worker_started_without_usable_nats_is_alive_not_ready_and_stops_on_sigterm(
    token_keys: str, unusable_nats: str
) -> None:
    probe_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {
            "CONNECTOR_ENV": "development",
            "CONNECTOR_NATS__URL": unusable_nats,
            "CONNECTOR_DATABASE__URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
            "CONNECTOR_TOKEN_KEYS": token_keys,
            "CONNECTOR_PROBE_PORT": str(probe_port),
            "CONNECTOR_WORKER__FETCH_TIMEOUT_SECONDS": "1",  # liveness window: 3 s
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "connector_cli", "token-refresher"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        live = ready = None
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[0][-3000:]
            try:
                live = httpx.get(f"http://127.0.0.1:{probe_port}/livez", timeout=1)
                ready = httpx.get(f"http://127.0.0.1:{probe_port}/readyz", timeout=3)
            except httpx.HTTPError:
                live = None
            if live is not None and live.json()["cycles"] >= 2:
                break
            time.sleep(0.05)  # polling a process with a deadline
        # Waiting for NATS is progress (no restart loop), but no work can be taken yet.
        assert live is not None, "no probes while NATS is unusable"
        assert ready is not None
        assert live.status_code == 200, live.text
        assert ready.status_code == 503
        assert ready.json()["checks"]["nats"].startswith("failed")
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
        assert process.returncode == 0, output[-3000:]
        assert time.monotonic() - stopping < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
