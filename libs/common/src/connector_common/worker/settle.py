"""What a work handler gets besides the body, and what it says to do with the message."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError


@dataclass(frozen=True)
class Settle:
    """What to do with a message once the handler is done."""

    action: Literal["ack", "nak", "dead_letter"]
    delay: float | None = None  # nak: redeliver after this many seconds
    reason: str | None = None  # nak / dead_letter: why (redacted, short)

    @classmethod
    def ack(cls) -> Settle:
        return cls("ack")

    @classmethod
    def nak(cls, delay: float, reason: str) -> Settle:
        return cls("nak", max(0.0, delay), reason)

    @classmethod
    def dead_letter(cls, reason: str) -> Settle:
        return cls("dead_letter", None, reason)


@dataclass(frozen=True)
class Delivery:
    """What the handler may know about the message besides its body."""

    subject: str
    headers: dict[str, str]
    attempt: int  # 1 on the first delivery
    max_deliver: int
    stream_seq: int

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.max_deliver


Handler = Callable[[bytes, Delivery], Awaitable[Settle]]


def describe(error: ValidationError) -> str:
    """What is wrong with a message, naming fields only (the input may hold anything)."""
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
        for e in error.errors(include_input=False, include_url=False)
    ]
    return "; ".join(problems)[:250]
