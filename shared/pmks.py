"""The 26 PMKS categories of Permensos No. 08/2012 (stable snake_case codes).

Copied from the brief's data into the package (`pmks.csv`) so that the project never reads
outside itself at run time.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class PmksCategory:
    no: int
    code: str
    nama: str
    english: str


@cache
def categories() -> dict[str, PmksCategory]:
    text = resources.files("shared").joinpath("pmks.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines())
    return {r["code"]: PmksCategory(int(r["no"]), r["code"], r["nama"], r["english"]) for r in rows}
