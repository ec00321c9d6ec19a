"""`benchmarks/results.json`: one list of measured records `{"name", "value", "unit", "command", "date", "machine"}`.

Each benchmark script calls `record(...)` for the figures it measured; a record replaces the earlier one of
the same name. Nothing is written for a figure that was not measured.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> str:
    """One line: CPU model, logical cores, OS."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def this_command() -> str:
    """The command line that is running, as a user would type it from the repository root."""
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def record(name: str, value: float, unit: str, command: str | None = None, path: Path = RESULTS) -> None:
    """Add or replace the record `name` in `path` (atomically: write a temporary file, then rename)."""
    records = json.loads(path.read_text()) if path.exists() else []
    records = [r for r in records if r["name"] != name]
    records.append({"name": name, "value": float(value), "unit": unit, "command": command or this_command(),
                    "date": datetime.date.today().isoformat(), "machine": machine()})
    records.sort(key=lambda r: r["name"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    tmp.replace(path)
