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


def py_spy() -> str | None:
    return shutil.which("py-spy")


class Recording:
    """py-spy record on some processes for a fixed time, in the background."""

    def __init__(self, pids: dict[str, int], out_dir: Path, duration: float, tag: str) -> None:
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
                 "--format", "raw", "--function", "--nonblocking", "--output", str(path)],
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


def summarise(path: Path, duration: float, top: int = 15) -> dict[str, Any]:
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

    # Frames that every stack of an asyncio process goes through say nothing.
    everywhere = {f for f, c in inclusive.items() if c >= 0.97 * total}
    return {
        "samples": total,
        # Share of the wall time the process was running Python (py-spy drops idle samples).
        "busy_pct": round(100 * total / (duration * RATE), 1),
        "inclusive_pct": {f: pct(c) for f, c in inclusive.most_common(top + len(everywhere))
                          if f not in everywhere},
        "own_pct": {f: pct(c) for f, c in own.most_common(top)},
    }
