"""The sandbox's state on disk: one SQLite file (standard library), written behind.

A record is ``(kind, key) -> JSON``: ``seller``/user id, ``grant``/grant id, ``access``/token,
and so on; a new kind of record needs no schema change. Mutations only mark a record dirty (a
dict assignment); a background thread writes what is dirty in one transaction every
``interval`` seconds, and :meth:`StateFile.close` writes the rest. So a request never waits
for the disk, and a clean stop (SIGTERM, Ctrl-C) loses nothing. A crash loses at most the last
``interval``.

One sandbox process owns a file: it is opened in SQLite's exclusive locking mode, and a second
process gets :class:`StateFileBusy` at start-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("ebay_sandbox.store")

SCHEMA_VERSION = 1
FLUSH_INTERVAL = 0.05

Row = tuple[str, str, str | None]  # kind, key, JSON value (None: delete)
Serialise = Callable[[Any], Any]


class StateFileBusy(RuntimeError):
    """Another sandbox process holds the state file."""


class StateFile:
    """A SQLite file of JSON records, with a write-behind thread."""

    def __init__(self, path: Path, interval: float = FLUSH_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Owner-only from the start: it holds the sandbox apps' secrets and tokens.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(path, timeout=0, check_same_thread=False, isolation_level=None)
        try:
            self._open()
        except sqlite3.OperationalError as exc:
            self._db.close()
            if "locked" in str(exc):
                raise StateFileBusy(f"{path} is in use by another sandbox") from None
            raise
        self._dirty: dict[tuple[str, str], tuple[Any, Serialise] | None] = {}
        self._cleared = False
        self._dirty_lock = threading.Lock()  # guards _dirty and _cleared only
        self._write_lock = threading.Lock()  # one writer at a time (thread or close)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._source_lock: threading.Lock | None = None
        self._thread = threading.Thread(target=self._run, name="sandbox-state", daemon=True)

    def _open(self) -> None:
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} was written by a newer sandbox (v{version})")
        self._db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock, kept until close
        # Indexed by a short digest of the key: keys such as access tokens are ~650 characters,
        # and a B-tree of those costs several times more per write.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, digest BLOB NOT NULL,"
            " key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, digest))"
        )
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db.execute("COMMIT")

    def start(self, source_lock: threading.Lock) -> None:
        """Start writing behind; records are serialised while holding ``source_lock``."""
        self._source_lock = source_lock
        self._thread.start()

    def load(self) -> dict[str, dict[str, Any]]:
        """Every record: kind -> key -> value."""
        found: dict[str, dict[str, Any]] = {}
        with self._write_lock:
            for kind, key, value in self._db.execute("SELECT kind, key, value FROM records"):
                found.setdefault(kind, {})[key] = json.loads(value)
        return found

    def mark(self, kind: str, key: str, obj: Any, serialise: Serialise) -> None:
        """Record ``obj`` as ``serialise(obj)`` at the next write (its state then)."""
        with self._dirty_lock:
            self._dirty[(kind, key)] = (obj, serialise)
        if not self._wake.is_set():  # set() takes a lock; most calls find it set already
            self._wake.set()

    def forget(self, kind: str, keys: Iterable[str]) -> None:
        """Delete records at the next write."""
        with self._dirty_lock:
            for key in keys:
                self._dirty[(kind, key)] = None
        self._wake.set()

    def clear(self) -> None:
        """Delete every record at the next write (before what is marked after this)."""
        with self._dirty_lock:
            self._dirty.clear()
            self._cleared = True
        self._wake.set()

    def flush(self) -> None:
        """Write what is dirty now, in one transaction."""
        with self._write_lock:
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, {}
                cleared, self._cleared = self._cleared, False
            if not dirty and not cleared:
                return
            rows = self._serialise(dirty)
            try:
                self._write(rows, cleared)
            except sqlite3.Error as exc:
                # Keep them for the next try (unless marked again meanwhile); never lose them.
                log.warning("could not write the sandbox state file: %s", exc)
                with self._dirty_lock:
                    for item, value in dirty.items():
                        self._dirty.setdefault(item, value)
                    self._cleared = self._cleared or cleared

    def _serialise(self, dirty: dict[tuple[str, str], tuple[Any, Serialise] | None]) -> list[Row]:
        lock = self._source_lock or threading.Lock()
        with lock:  # a consistent view of each object
            return [
                (kind, key, None if item is None else json.dumps(item[1](item[0])))
                for (kind, key), item in dirty.items()
            ]

    def _write(self, rows: list[Row], cleared: bool) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            if cleared:
                db.execute("DELETE FROM records")
            gone = [(kind, _digest(key)) for kind, key, value in rows if value is None]
            if gone:
                db.executemany("DELETE FROM records WHERE kind = ? AND digest = ?", gone)
            kept = [(kind, _digest(key), key, value) for kind, key, value in rows if value]
            if kept:
                db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", kept)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait()
            # Gather the changes of the next moment into one transaction.
            if self._closing.wait(self.interval):
                return
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Stop the writer, write the rest, close the file."""
        self._closing.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.flush()
        with self._write_lock:
            self._db.close()


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=16).digest()
