"""CPU time of a benchmark's processes, by role, from ``/proc``.

Only descendants of the calling process count, so other work on the machine is not ours.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

ROLES = ("token-refresher", "health-checker", "scheduler", "sandbox", "postgres", "nats-server")


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process's descendants, by role (/proc).

    Only descendants of this process count: other work on the machine is not ours. A process
    that exited is no longer counted, so read this while everything measured still runs.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, str, float]] = {}  # pid -> (parent, cmdline, cpu seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (
            int(fields[1]),
            cmdline,
            (int(fields[11]) + int(fields[12])) / ticks,
        )
    usage: dict[str, float] = defaultdict(float)
    me = os.getpid()
    for pid, (_parent, cmdline, cpu) in stats.items():
        chain = _ancestry(stats, pid)
        if me not in chain:
            continue
        if pid == me:
            usage["benchmark"] += cpu
            continue
        role = _role(cmdline) or next(
            (r for r in (_role(stats[p][1]) for p in chain[1:]) if r == "postgres"), None
        )
        if role is not None:
            usage[role] += cpu
    return usage


def _role(cmdline: str) -> str | None:
    """What a process is, from its command line (never from a folder name in it)."""
    args = cmdline.split()
    if not args:
        return None
    if "connector_cli" in args:
        after = args[args.index("connector_cli") + 1 :]
        return after[0] if after and after[0] in ROLES else None
    program = Path(args[0]).name
    if program == "nats-server":
        return "nats-server"
    if program == "postgres" or args[0].startswith("postgres:"):
        return "postgres"
    return None


def _ancestry(stats: dict[int, tuple[int, str, float]], pid: int) -> list[int]:
    chain = []
    while pid in stats and pid > 1:
        chain.append(pid)
        pid = stats[pid][0]
    return chain


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on the machine)."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
