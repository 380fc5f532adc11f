#!/usr/bin/env python3
"""Turns the JSON results of benchmarks/run.sh into the Markdown tables of
docs/BENCHMARKS.md: medians of the runs with their spread (min–max) and the
Switchboard/Nchan ratio.

    python3 benchmarks/summarize.py benchmarks/results/<run dir> [more dirs…]
"""
from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

NAME = re.compile(r"^(idle|fanout)-(switchboard|nchan)-(.+)-r(\d+)$")


def load(directories: list[Path]) -> dict:
    groups: dict = defaultdict(list)
    for path in sorted(p for d in directories for p in d.glob("*.json")):
        m = NAME.match(path.stem)
        if m:
            try:
                groups[(m.group(1), m.group(2), m.group(3))].append(json.loads(path.read_text()))
            except ValueError:
                print(f"skipped {path} (not a complete result)", file=sys.stderr)
    return groups


def stat(values: list[float], digits: int = 1) -> tuple[float | None, str]:
    values = [v for v in values if v is not None]
    if not values:
        return None, "—"
    med = statistics.median(values)
    text = f"{med:,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}–{max(values):,.{digits}f})"
    return med, text + ("" if len(values) >= 3 else f" [n={len(values)}]")


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def loss(runs: list[dict]) -> str:
    if not runs:
        return "—"
    lost = [r["ledger"]["lost"] for r in runs]
    expected = [r["ledger"]["expected"] for r in runs]
    dropped = sum(r["ledger"]["dropped"] for r in runs)
    share = 100 * statistics.median(l / e if e else 0 for l, e in zip(lost, expected))
    text = f"{statistics.median(lost):,.0f} ({share:.2f} %)" if any(lost) else "0"
    return text + (f", {dropped} dropped" if dropped else "")


def idle_table(groups: dict) -> list[str]:
    keys = sorted({k[2] for k in groups if k[0] == "idle"})
    if not keys:
        return []
    lines = [
        "| subscribers | Switchboard KB/conn | Nchan KB/conn | ratio | Switchboard connects/s | Nchan connects/s |",
        "|---|---|---|---|---|---|",
    ]
    for key in keys:
        transport, n = key.split("-")
        sb, nc = groups.get(("idle", "switchboard", key), []), groups.get(("idle", "nchan", key), [])
        sb_kb, sb_text = stat([r.get("idleKBPerConnection") for r in sb], 2)
        nc_kb, nc_text = stat([r.get("idleKBPerConnection") for r in nc], 2)
        _, sb_rate = stat([r["connectsPerSecond"] for r in sb], 0)
        _, nc_rate = stat([r["connectsPerSecond"] for r in nc], 0)
        lines.append(f"| {int(n):,} {transport.upper()} | {sb_text} | {nc_text} | {ratio(sb_kb, nc_kb)} | {sb_rate} | {nc_rate} |")
    return lines


def fanout_table(groups: dict) -> list[str]:
    keys = sorted({k[2] for k in groups if k[0] == "fanout"}, key=lambda k: tuple(int(x) for x in k.split("-")))
    if not keys:
        return []
    lines = [
        "| subscribers × msg/s | server | deliveries/s | p50 ms | p99 ms | lost | bench CPU % |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios = ["", "| subscribers × msg/s | deliveries/s ratio (SB/Nchan) | p99 ratio (SB/Nchan) |", "|---|---|---|"]
    for key in keys:
        n, rate = (int(x) for x in key.split("-"))
        meds = {}
        for server in ("switchboard", "nchan"):
            runs = groups.get(("fanout", server, key), [])
            d, d_text = stat([r["deliveriesPerSecond"] for r in runs], 0)
            _, p50 = stat([r["latency"]["p50"] for r in runs], 2)
            p99, p99_text = stat([r["latency"]["p99"] for r in runs], 2)
            _, cpu = stat([r["benchCPUPercent"] for r in runs], 0)
            meds[server] = (d, p99)
            name = "Switchboard" if server == "switchboard" else "Nchan"
            lines.append(f"| {n:,} × {rate:,} | {name} | {d_text} | {p50} | {p99_text} | {loss(runs)} | {cpu} |")
        ratios.append(
            f"| {n:,} × {rate:,} | {ratio(meds['switchboard'][0], meds['nchan'][0])} | {ratio(meds['switchboard'][1], meds['nchan'][1])} |")
    return lines + ratios


def main() -> None:
    directories = [Path(a) for a in sys.argv[1:]] or [Path(".")]
    groups = load(directories)
    out = []
    idle = idle_table(groups)
    if idle:
        out += ["### Idle memory per connection (one node, in-memory)", ""] + idle + [""]
    fan = fanout_table(groups)
    if fan:
        out += ["### Fan-out across two nodes sharing Redis (WebSocket)", ""] + fan + [""]
    print("\n".join(out) if out else f"no results in {' '.join(map(str, directories))}")


if __name__ == "__main__":
    main()
