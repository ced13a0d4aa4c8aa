"""Group commit: many concurrent callers, one statement.

Each message is handled by its own task, which reads like a single-account refresh (claim, call
eBay, write). Where such a step is a database statement, the task submits its item to a
:class:`Batcher` and awaits its own result; the batcher runs one ``flush`` for everything
submitted meanwhile. While one flush is in flight the next items gather, so batches grow with the
load by themselves and nothing waits for a timer: at a trickle a batch is one item, at a burst
it is many (up to ``max_size``).

A flush that raises fails every item of its batch with that exception (a database outage fails
the messages in work, which come back later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Coalesces concurrent :meth:`submit` calls into calls of ``flush`` (one at a time)."""

    def __init__(
        self, flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, max_size: int = 256
    ) -> None:
        self._flush = flush
        self._max_size = max_size
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0  # how many flushes ran (tests and metrics)

    async def submit(self, item: T) -> R:
        """The result ``flush`` gave for ``item`` (or the exception it raised)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # everything submitted in this turn of the loop joins in
            while self._queue:
                batch = self._queue[: self._max_size]
                del self._queue[: self._max_size]
                await self._run(batch)
        finally:
            self._task = None

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.flushes += 1
        try:
            results = await self._flush([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
