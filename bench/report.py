"""Benchmarks rewrite their own section of ``docs/benchmarks.md``.

A section lies between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; a benchmark run
replaces what is between the markers (or appends the section with its markers the first time),
so the document always shows the last run next to the hand-written text around it.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def rewrite_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace the generated section ``name`` of the benchmarks document with ``body``."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy the machine was."""
    with open("/proc/loadavg") as f:
        load = [float(v) for v in f.read().split()[:3]]
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "date": dt.date.today().isoformat(),
        "cpus": os.cpu_count() or 0,
        "cpu_model": model,
        "python": platform.python_version(),
        "load_average": load,
    }


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
