"""Sampling profiles of the running services (py-spy attached by pid), summarised as the
functions where the samples fall, so that a gap to a target comes with where the time goes.

py-spy writes collapsed stacks ("frame;frame;frame count"), which flamegraph.pl and
speedscope read as they are; `summarise` turns them into the top functions by inclusive
and by own time.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 100  # samples per second
SCAFFOLD = ("(<frozen runpy>)", "(uvicorn/main.py)", "(uvicorn/server.py)", "(uvicorn/_compat.py)",
            "(asyncio/runners.py)", "(asyncio/base_events.py)", "(asyncio/events.py)", "__main__.py)",
            "(shared/runtime.py)", "(uvloop/__init__.py)", "(threading.py)")


def py_spy() -> str | None:
    return shutil.which("py-spy")


class Recording:
    """py-spy record on some processes for a fixed time, in the background."""

    def __init__(self, pids: dict[str, int], out_dir: Path, duration: float, tag: str,
                 subprocesses: bool = False) -> None:
        self.out_dir = out_dir
        self.duration = duration
        self.files: dict[str, Path] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        exe = py_spy()
        if exe is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            path = out_dir / f"{tag}-{name}.collapsed"
            self.files[name] = path
            self.procs.append(subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(duration))), "--rate", str(RATE),
                 "--format", "raw", "--function", "--nonblocking", "--output", str(path),
                 *(["--subprocesses"] if subprocesses else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def wait(self) -> dict[str, Any]:
        for p in self.procs:
            try:
                p.wait(timeout=self.duration + 30)
            except subprocess.TimeoutExpired:
                p.terminate()
                p.wait()
        return {name: summarise(path, self.duration) | {"file": str(path)}
                for name, path in self.files.items() if path.exists()}


def _frame_name(frame: str) -> str:
    # "function (module/path.py:line)" -> "function (path.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    return f"{name} ({file})" if file else name


PROJECT = ("intake/", "matching/", "notify/", "shared/", "bench/")


def _package(frame: str) -> str:
    """'fn (sqlalchemy/orm/session.py)' -> 'sqlalchemy'; the project's own code -> 'rujukan'."""
    _, _, where = frame.partition(" (")
    where = where.rstrip(")")
    if where.startswith(PROJECT):
        return "rujukan"
    if "/" not in where:
        return "python" if where.endswith(".py") or where.startswith("<") else where or "?"
    top = where.split("/", 1)[0]
    return top if top not in ("asyncio", "concurrent", "email", "json", "logging", "threading") else "python"


def summarise(path: Path, duration: float, top: int = 20) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        total += count
        for f in set(frames):
            inclusive[f] += count
        if frames:
            own[frames[-1]] += count
    if total == 0:
        return {"samples": 0}

    def pct(c: int) -> float:
        return round(100 * c / total, 1)

    # Frames that every stack of an asyncio process goes through say nothing, nor do the
    # process's start-up frames (uvicorn, runpy, asyncio's runner) under which tasks run.
    everywhere = {f for f, c in inclusive.items() if c >= 0.97 * total or f.endswith(SCAFFOLD)}
    by_package: Counter[str] = Counter()
    for f, c in own.items():
        by_package[_package(f)] += c
    return {
        "samples": total,
        "own_by_package_pct": {p: pct(c) for p, c in by_package.most_common(12)},
        # Share of the wall time the process was running Python (py-spy drops idle samples).
        "busy_pct": round(100 * total / (duration * RATE), 1),
        # The project's own functions, with what they call (where a request's time goes).
        "project_inclusive_pct": dict([(f, pct(c)) for f, c in inclusive.most_common()
                                       if f not in everywhere and _package(f) == "rujukan"][:top]),
        "own_pct": {f: pct(c) for f, c in own.most_common(top)},
    }
