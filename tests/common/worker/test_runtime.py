"""A pipeline process as Kubernetes runs it, while its dependencies are not there yet."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from connector_common.messaging import Topology
from connector_devstack.embedded import free_port, nats_server_binary
from tests.fixtures.infra import provision_namespace


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
        deadline = time.monotonic() + 60  # a loaded machine may take long to start Python
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


def _start_refresher(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector_cli", "token-refresher"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_a_worker_binds_to_provisioned_streams_and_never_declares_them(
    token_keys: str, nats_url: str, nats_client: NatsClient, database_url: str, namespace: str
) -> None:
    """In production the services' NATS users may not create streams: a worker started before
    provisioning stays alive and not ready, saying what is missing, then binds once it exists."""
    probe_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(
        {
            "CONNECTOR_ENV": "development",
            "CONNECTOR_NATS__URL": nats_url,
            "CONNECTOR_NATS__NAMESPACE": namespace,
            "CONNECTOR_DATABASE__URL": database_url,
            "CONNECTOR_TOKEN_KEYS": token_keys,
            "CONNECTOR_PROBE_PORT": str(probe_port),
            "CONNECTOR_WORKER__FETCH_TIMEOUT_SECONDS": "1",
        }
    )
    process = _start_refresher(env)
    topology = Topology(namespace)
    js = nats_client.jetstream()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{probe_port}") as http:

            async def readiness() -> httpx.Response | None:
                assert process.poll() is None
                try:
                    return await http.get("/readyz", timeout=3)
                except httpx.HTTPError:
                    return None

            deadline = time.monotonic() + 60
            while True:
                ready = await readiness()
                if ready is not None and ready.json()["checks"].get("database") == "ok":
                    break
                assert time.monotonic() < deadline, "no readiness answer"
                await asyncio.sleep(0.1)  # polling a starting process, with a deadline
            assert ready.status_code == 503
            assert ready.json()["checks"]["nats"] == (
                f"failed: stream {topology.work_stream} does not exist: "
                "run `connector nats provision`"
            )
            assert (await http.get("/livez")).status_code == 200  # waiting is not a hang
            with pytest.raises(NotFoundError):
                await js.stream_info(topology.work_stream)  # it declared nothing

            assert await provision_namespace(nats_url, namespace)
            deadline = time.monotonic() + 30
            while (ready := await readiness()) is None or ready.status_code != 200:
                assert time.monotonic() < deadline, ready.text if ready else "no answer"
                await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
        assert process.returncode == 0, output[-3000:]
        assert "run `connector nats provision`" in output  # said in its log too
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for config in topology.stream_configs():
            assert config.name is not None
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(config.name)
