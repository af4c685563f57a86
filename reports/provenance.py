"""The report's provenance footer: what produced the results, summarised over every cell.

Package versions, devices, dates, git revisions and command lines are collected from each
record's ``provenance``; a value that differs between cells is listed with every variant
(a sweep run across two torch versions should say so, not pick one).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Provenance:
    packages: dict[str, list[str]]  # name -> distinct versions seen
    devices: list[str]
    first_date: str
    last_date: str
    git_revs: list[str]
    commands: list[tuple[str, int]]  # (command line, number of cells it produced)
    n_cells: int
    other: dict[str, list[str]]  # python, torch_threads, seed, platform, latency timing, ternary kernels


def summarize(records: list[dict[str, Any]]) -> Provenance:
    packages: dict[str, set[str]] = {}
    devices, revs, dates = set(), set(), []
    commands: Counter[str] = Counter()
    other: dict[str, set[str]] = {k: set() for k in ("python", "torch_threads", "seed", "platform")}
    timing: set[str] = set()
    kernels: set[str] = set()
    for r in records:
        # How efficiency cells timed their latencies (eager, or CUDA graph replay), and which kernels
        # ran the ternary weights (the CPU's quad-table kernel or FBGEMM, ...): both decide latencies.
        details = r.get("details") or {}
        timing.update(str(t) for t in (details.get("timing") or {}).values())
        kernels.update(str(k) for k in (details.get("kernels") or []))
        p = r.get("provenance") or {}
        for name, version in (p.get("packages") or {}).items():
            packages.setdefault(str(name), set()).add(str(version) if version else "not installed")
        if p.get("device"):
            devices.add(str(p["device"]))
        if p.get("git_rev"):
            revs.add(str(p["git_rev"]))
        if p.get("date"):
            dates.append(str(p["date"]))
        if p.get("command"):
            commands[str(p["command"])] += 1
        for k in other:
            if p.get(k) is not None:
                other[k].add(str(p[k]))
    dates.sort()
    other["latency timing"] = timing
    other["ternary kernels"] = kernels
    return Provenance(
        packages={k: sorted(v) for k, v in sorted(packages.items())},
        devices=sorted(devices),
        first_date=dates[0] if dates else "",
        last_date=dates[-1] if dates else "",
        git_revs=sorted(revs),
        commands=sorted(commands.items(), key=lambda kv: (-kv[1], kv[0])),
        n_cells=len(records),
        other={k: sorted(v) for k, v in other.items() if v},
    )
