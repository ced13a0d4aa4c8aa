"""Liveness follows loop progress; readiness follows PostgreSQL and NATS; both over real HTTP."""

from __future__ import annotations

import httpx

from connector_common.worker.probes import ProbeServer, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_that_keeps_cycling_is_alive_even_when_idle() -> None:
    clock = Clock()
    progress = Progress(stall_after=15, handler_timeout=60, clock=clock)
    for _ in range(10):
        clock.now += 10  # an empty fetch every 10 s
        progress.cycle()
        assert progress.alive()[0]


def test_a_loop_without_a_cycle_for_longer_than_the_stall_window_is_dead() -> None:
    clock = Clock()
    progress = Progress(stall_after=15, handler_timeout=60, clock=clock)
    clock.now += 16
    alive, detail = progress.alive()
    assert not alive
    assert detail["seconds_since_cycle"] == 16


def test_a_long_handler_is_progress_until_it_overstays_the_handler_timeout() -> None:
    clock = Clock()
    progress = Progress(stall_after=15, handler_timeout=60, clock=clock)
    token = progress.started()
    clock.now += 70  # a slow eBay call blocks the next fetch: still alive
    assert progress.alive()[0]
    clock.now += 10  # 80 s > 60 + 15: wedged
    assert not progress.alive()[0]
    progress.finished(token)
    assert progress.alive()[0]


async def test_probe_endpoints_answer_over_http() -> None:
    clock = Clock()
    progress = Progress(stall_after=15, handler_timeout=60, clock=clock)

    async def ok() -> None:
        return None

    async def broken() -> None:
        raise ConnectionError("postgresql://user:hunter2@db/x refused")

    checks = {"database": ok, "nats": ok}
    server = ProbeServer(progress, checks, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/livez")).status_code == 200
            assert (await http.get("/readyz")).json() == {
                "ready": True,
                "checks": {"database": "ok", "nats": "ok"},
            }
            checks["database"] = broken
            failing = await http.get("/readyz")
            assert failing.status_code == 503
            assert failing.json()["checks"]["database"] == "failed: ConnectionError"
            assert "hunter2" not in failing.text
            clock.now += 100
            assert (await http.get("/livez")).status_code == 503
            checks["database"] = ok
            server.stopping = True
            assert (await http.get("/readyz")).status_code == 503
            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/livez")).status_code == 405
    finally:
        await server.stop()


async def test_metrics_are_served_in_prometheus_text_next_to_the_probes() -> None:
    from connector_common.settings import OtelSettings
    from connector_common.telemetry import setup_telemetry

    telemetry = setup_telemetry(OtelSettings(), "probe-test", set_global=False)
    telemetry.meter("t").create_counter("connector.test.things", unit="{thing}").add(3)
    progress = Progress(stall_after=15, handler_timeout=60)
    server = ProbeServer(progress, {}, host="127.0.0.1", port=0, metrics=telemetry.metrics_text)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            response = await http.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "connector_test_things_total 3.0" in response.text
            assert 'service_name="probe-test"' in response.text  # target_info
            assert (await http.post("/metrics")).status_code == 405
    finally:
        await server.stop()
        telemetry.shutdown()


async def test_without_a_metrics_source_there_is_no_metrics_path() -> None:
    server = ProbeServer(Progress(stall_after=15, handler_timeout=60), {}, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            missing = await http.get("/metrics")
        assert missing.status_code == 404
        assert missing.json()["paths"] == ["/livez", "/readyz"]
    finally:
        await server.stop()
