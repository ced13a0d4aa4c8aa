"""One log line per batch, in the spirit of "token refresh: 2/2 accounts refreshed"."""

from __future__ import annotations

from collections import Counter

from connector_common.logs import get_logger

log = get_logger(__name__)


class BatchSummary:
    """Counts outcomes while a batch is in work; :meth:`flush` logs them as one line."""

    def __init__(self, event: str, done_outcome: str, verb: str) -> None:
        self._event = event  # e.g. "token refresh"
        self._done = done_outcome  # the outcome that counts as done, e.g. "refreshed"
        self._verb = verb
        self._counts: Counter[str] = Counter()

    def add(self, outcome: str) -> None:
        self._counts[outcome] += 1

    def flush(self) -> None:
        """Log the batch (if anything happened) and start a new one."""
        if not self._counts:
            return
        total = sum(self._counts.values())
        done = self._counts[self._done]
        result = f"{done}/{total} accounts {self._verb}"
        log.info(self._event, result=result, total=total, **dict(sorted(self._counts.items())))
        self._counts.clear()
