"""Pacing per API: a few 429s concern their accounts; an API answering mostly 429s pauses."""

from __future__ import annotations

from connector_common.ebay.pacing import ApiPacer


def test_scattered_rate_limits_never_pause_the_api() -> None:
    clock = [0.0]
    pacer = ApiPacer(clock=lambda: clock[0])
    for n in range(1000):  # a 429 storm on 30 % of the calls, 500 calls a second
        clock[0] = n / 500
        pacer.observe("oauth", rate_limited=n % 10 < 3, retry_after=2.0, remaining=None)
        assert pacer.pause_left("oauth") == 0


def test_an_api_answering_mostly_429s_pauses_for_what_ebay_asked() -> None:
    clock = [0.0]
    pacer = ApiPacer(clock=lambda: clock[0])
    for n in range(25):
        clock[0] = n / 100
        pacer.observe("oauth", rate_limited=True, retry_after=3.0, remaining=None)
    assert 2.9 < pacer.pause_left("oauth") <= 3.0
    assert pacer.pause_left("trading") == 0  # other APIs go on
    clock[0] += 3.0
    assert pacer.pause_left("oauth") == 0


def test_a_429_saying_nothing_is_left_pauses_at_once() -> None:
    clock = [0.0]
    pacer = ApiPacer(clock=lambda: clock[0])
    pacer.observe("trading", rate_limited=False, retry_after=None, remaining=0)
    assert pacer.pause_left("trading") == 0  # a successful answer is no reason to stop
    pacer.observe("trading", rate_limited=True, retry_after=None, remaining=0)
    assert pacer.pause_left("trading") == 1.0
