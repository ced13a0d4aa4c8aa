"""Fault scenarios on the whole system as real processes; each prints one JSON line.

Every scenario fails on any lost account, double write or wrongly errored account. Those
marked ``smoke`` also run in ``make test`` (200 accounts); ``make test-faults`` runs them all.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections import defaultdict
from collections.abc import Callable

import httpx
import pytest

from bench.cluster import Cluster, Proc
from connector_common.messaging import Topology, connect
from connector_common.settings import NatsSettings
from connector_common.worker.deadletter import DELIVERIES_HEADER, REASON_HEADER
from tests.faults.harness import (
    Burst,
    Outcome,
    burst,
    lease_holders,
    log_lines,
    non_json_lines,
    query,
    taken_over,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RETRY_AFTER = 2.0


def _kill(proc: Proc) -> None:
    proc.signal(signal.SIGKILL)
    proc.wait(10)


@pytest.mark.smoke
def test_baseline(cluster: Cluster, record: list[Outcome]) -> None:
    outcome = burst(cluster, "baseline")
    record.append(outcome)
    outcome.check()
    assert outcome.repeated_calls == 0


def _kill_refreshers(times: int) -> Callable[[Burst], None]:
    """Kill the refresher holding leases, restart it, and time until every lease it held was
    claimed by another (its work taken over); then the next kill, while the burst lasts."""

    def strike(run: Burst) -> None:
        takeovers: list[float] = []
        run.wait_refreshed(20)
        for _ in range(times):
            victim = run.refreshers[0]
            deadline = time.monotonic() + 10
            while not (held := lease_holders(run.cluster, victim)):  # work in hand: strike
                if run.refreshed() >= len(run.cluster.refresh_tokens):
                    break  # the burst is over
                assert time.monotonic() < deadline, "the victim never held a lease"
                time.sleep(0.01)
            if not held:
                break
            killed = time.monotonic()
            _kill(victim)
            run.restart_refresher(victim)
            deadline = killed + 60
            while taken_over(run.cluster, held) < len(held):
                assert time.monotonic() < deadline, "the work of a killed refresher stayed put"
                time.sleep(0.05)
            takeovers.append(time.monotonic() - killed)
        run.notes["kills"] = len(takeovers)
        run.notes["takeover_s"] = round(max(takeovers), 1) if takeovers else None

    return strike


@pytest.mark.smoke
def test_a_refresher_killed_mid_burst_has_its_work_taken_over_within_seconds(
    cluster: Cluster, record: list[Outcome], full_suite: bool
) -> None:
    kills = 5 if full_suite else 1
    outcome = burst(
        cluster,
        f"kill -9 a refresher {kills}x mid-burst",
        latency_ms=3000 if full_suite else 1500,  # a burst long enough for every kill
        during=_kill_refreshers(kills),
    )
    record.append(outcome)
    outcome.check()
    assert outcome.notes["kills"] == kills
    assert outcome.notes["takeover_s"] <= 15


def test_the_leader_scheduler_killed_mid_publish_with_a_second_one_running(
    cluster: Cluster, record: list[Outcome]
) -> None:
    def strike(run: Burst) -> None:
        holder = query(run.cluster, "SELECT holder FROM leases WHERE name = 'scheduler'")
        pid = int(str(holder[0][0]).rsplit(":", 1)[1])
        leader = next(p for p in run.schedulers if p.process.pid == pid)
        before = asyncio.run(_work_published(run.cluster))
        deadline = time.monotonic() + 10
        while asyncio.run(_work_published(run.cluster)) == before:
            assert time.monotonic() < deadline, "the leader never published"
            time.sleep(0.005)
        _kill(leader)
        run.notes["published_before_kill"] = asyncio.run(_work_published(run.cluster)) - before

    outcome = burst(
        cluster, "kill -9 the leader scheduler mid-publish", schedulers=2, during=strike
    )
    record.append(outcome)
    outcome.check()


async def _work_published(cluster: Cluster) -> int:
    client = await connect(NatsSettings(url=cluster.nats.url), "faults")
    try:
        info = await client.jetstream().stream_info(Topology(cluster.namespace).work_stream)
        return int(info.state.last_seq)
    finally:
        await client.close()


@pytest.mark.parametrize("down", [1, 15])
def test_nats_killed_and_restarted(cluster: Cluster, record: list[Outcome], down: int) -> None:
    def strike(run: Burst) -> None:
        run.wait_refreshed(len(cluster.refresh_tokens) // 5)
        run.cluster.kill_nats()
        time.sleep(down)
        run.cluster.restart_nats()

    outcome = burst(cluster, f"kill -9 NATS, {down} s down", latency_ms=100, during=strike)
    record.append(outcome)
    outcome.check()


@pytest.mark.parametrize("down", [1, 20])
def test_postgres_killed_and_restarted(cluster: Cluster, record: list[Outcome], down: int) -> None:
    def strike(run: Burst) -> None:
        run.wait_refreshed(len(cluster.refresh_tokens) // 5)
        run.cluster.kill_postgres()
        time.sleep(down)
        run.cluster.restart_postgres()
        run.notes["_logs_from"] = {p.name: len(log_lines(p)) for p in run.refreshers}

    refreshers: list[Proc] = []

    def keep(run: Burst) -> None:
        refreshers.extend(run.refreshers)
        strike(run)

    outcome = burst(cluster, f"kill -9 PostgreSQL, {down} s down", latency_ms=100, during=keep)
    outcome.notes.pop("_logs_from", None)
    lines = sum(len(log_lines(p)) for p in refreshers)
    tracebacks = sum(p.log().count("Traceback") for p in refreshers)
    outcome.notes["refresher_log_lines"] = lines
    outcome.notes["tracebacks"] = tracebacks
    record.append(outcome)
    outcome.check()
    assert not any(non_json_lines(p) for p in refreshers)


@pytest.mark.smoke
def test_a_429_storm_is_drained_without_calling_early_or_stalling(
    cluster: Cluster, record: list[Outcome], results: dict[str, Outcome]
) -> None:
    def storm(c: Cluster) -> None:
        c.fault("token", "rate_limit", probability=0.3, retry_after=RETRY_AFTER)

    started = time.time()
    outcome = burst(cluster, "429 storm (30 %, Retry-After 2)", faults=storm)
    calls = cluster.calls("token", since=started)
    by_seller: dict[str, list[dict[str, object]]] = defaultdict(list)
    for call in calls:
        if call["seller"] is not None:  # not the scheduler's application token
            by_seller[str(call["seller"])].append(call)
    early, worst, rounds = 0, 0.0, 0
    for seller_calls in by_seller.values():
        limited = 0
        for call, following in itertools.pairwise(seller_calls):
            if call["status"] == 429:
                limited += 1
                gap = float(following["at"]) - float(call["at"])  # type: ignore[arg-type]
                early += gap < RETRY_AFTER
                worst = max(worst, gap)
        rounds = max(rounds, limited)
    outcome.notes.update(
        {
            "calls_before_retry_after": early,
            "longest_wait_after_429_s": round(worst, 2),
            "most_429s_one_account": rounds,
            # Each 429 costs its account 2 s: no drain can be shorter than this.
            "floor_s": rounds * RETRY_AFTER,
        }
    )
    if "baseline" in results:
        outcome.notes["vs_baseline"] = round(
            outcome.drain_seconds / max(results["baseline"].drain_seconds, 0.1), 1
        )
    record.append(outcome)
    outcome.check()
    assert early == 0
    assert worst <= 2 * RETRY_AFTER + 1  # a little for the sandbox's latency and scheduling


POISON = {
    "deeply nested JSON, no headers": (b"[" * 30_000 + b"]" * 30_000, None),
    "not JSON, content-type application/json": (
        b"this is not json",
        {"content-type": "application/json"},
    ),
    "invalid UTF-8, content-type text/plain": (b"\xff\xfe\xfa\x80", {"content-type": "text/plain"}),
    "JSON of the wrong shape": (b'{"hello": "world"}', None),
    "empty body": (b"", None),
    "JSON array": (b"[1, 2, 3]", None),
}


@pytest.mark.smoke
def test_poison_messages_are_dead_lettered_on_their_first_delivery(
    cluster: Cluster, record: list[Outcome]
) -> None:
    cluster.stop_services()
    refresher = cluster.start_service("token-refresher")
    cluster.ready(refresher)
    letters = asyncio.run(_poison(cluster))
    refresher.signal(signal.SIGTERM)
    assert refresher.wait(30) == 0
    assert len(letters) == len(POISON), letters
    for headers in letters:
        assert headers[DELIVERIES_HEADER] == "1", headers
        assert headers[REASON_HEADER].startswith("malformed refresh request: "), headers
    dead_lettered = [
        json.loads(line)
        for line in log_lines(refresher)
        if json.loads(line).get("event") == "message dead-lettered"
    ]
    assert len(dead_lettered) == len(POISON)
    assert non_json_lines(refresher) == []
    assert "Traceback" not in refresher.log()
    record.append(
        Outcome(
            "poison messages",
            len(POISON),
            0,
            0,
            0,
            0,
            0.0,
            {"dead_lettered_first_delivery": len(letters), "log_lines": len(log_lines(refresher))},
        )
    )


async def _poison(cluster: Cluster) -> list[dict[str, str]]:
    topology = Topology(cluster.namespace)
    client = await connect(NatsSettings(url=cluster.nats.url), "faults")
    js = client.jetstream()
    try:
        before = (await js.stream_info(topology.dlq_stream)).state.last_seq
        for index, (body, headers) in enumerate(POISON.values()):
            await js.publish(
                topology.refresh_subject,
                body,
                headers={**(headers or {}), "Nats-Msg-Id": f"poison-{time.time()}-{index}"}
                if headers
                else None,
            )
        deadline = time.monotonic() + 30
        while (await js.stream_info(topology.dlq_stream)).state.last_seq < before + len(POISON):
            assert time.monotonic() < deadline, "the poison messages were not dead-lettered"
            await asyncio.sleep(0.05)
        letters = []
        for seq in range(before + 1, before + len(POISON) + 1):
            msg = await js.get_msg(topology.dlq_stream, seq)
            letters.append(dict(msg.headers or {}))
        return letters
    finally:
        await client.close()


def test_sigterm_mid_batch_finishes_the_work_in_hand(
    cluster: Cluster, record: list[Outcome]
) -> None:
    def strike(run: Burst) -> None:
        victim = run.refreshers[0]
        _wait_in_work(victim, 16)
        started = time.monotonic()
        victim.signal(signal.SIGTERM)
        run.notes["exit_code"] = victim.wait(40)
        run.notes["exit_s"] = round(time.monotonic() - started, 1)

    outcome = burst(cluster, "SIGTERM mid-batch", latency_ms=1000, during=strike)
    record.append(outcome)
    outcome.check()
    assert outcome.notes["exit_code"] == 0


@pytest.mark.smoke
def test_sigterm_past_the_grace_period_exits_non_zero_and_loses_nothing(
    cluster: Cluster, record: list[Outcome]
) -> None:
    victims: list[Proc] = []

    def strike(run: Burst) -> None:
        victim = run.refreshers[0]
        victims.append(victim)
        _wait_in_work(victim, 4)
        started = time.monotonic()
        victim.signal(signal.SIGTERM)
        run.notes["exit_code"] = victim.wait(30)
        run.notes["exit_s"] = round(time.monotonic() - started, 1)

    outcome = burst(
        cluster,
        "SIGTERM past the grace period",
        latency_ms=3000,
        env={"CONNECTOR_WORKER__GRACEFUL_TIMEOUT_SECONDS": "1"},
        during=strike,
    )
    record.append(outcome)
    outcome.check()
    assert outcome.notes["exit_code"] == 3
    [line] = [json.loads(line) for line in log_lines(victims[0]) if "grace period ran out" in line]
    assert line["abandoned"] > 0
    assert non_json_lines(victims[0]) == []
    assert "Traceback" not in victims[0].log()


def _wait_in_work(proc: Proc, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            live = httpx.get(f"{proc.url}/livez", timeout=2).json()
        except httpx.HTTPError:
            live = {}
        if live.get("in_work", 0) >= count:
            return
        assert time.monotonic() < deadline, f"{proc.name} never had {count} messages in work"
        time.sleep(0.02)
