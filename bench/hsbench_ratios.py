"""Ratio table of two hsbench JSON results (Synapse first, us second), in Markdown.

Server CPU per operation is the figure least disturbed by a shared machine, so
it leads; p50 latency and throughput follow.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _cell(scenario: dict[str, Any], *path: str) -> float | None:
    value: Any = scenario
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else None


def _ratio(theirs: float | None, ours: float | None) -> str:
    if not theirs or not ours:
        return "-"
    return f"{theirs / ours:.1f}x"


def table(synapse: dict[str, Any], ours: dict[str, Any]) -> str:
    lines = [
        f"hsbench {ours.get('version')} — Synapse vs conduwuit, same preset, same session",
        "",
        "| scenario | Synapse CPU ms/op | ours CPU ms/op | CPU ratio | Synapse p50 ms "
        "| ours p50 ms | p50 ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, mine in ours["scenarios"].items():
        theirs = synapse.get("scenarios", {}).get(name, {})
        s_cpu = _cell(theirs, "resources", "server_cpu_ms_per_op")
        o_cpu = _cell(mine, "resources", "server_cpu_ms_per_op")
        s_p50 = _cell(theirs, "latency_ms", "p50")
        o_p50 = _cell(mine, "latency_ms", "p50")
        lines.append(f"| {name} | {s_cpu or '-'} | {o_cpu or '-'} | {_ratio(s_cpu, o_cpu)} "
                     f"| {s_p50 or '-'} | {o_p50 or '-'} | {_ratio(s_p50, o_p50)} |")
    for name in ("messages_pagination",):
        s_rate = _cell(synapse.get("scenarios", {}).get(name, {}), "events_per_s")
        o_rate = _cell(ours["scenarios"].get(name, {}), "events_per_s")
        if s_rate and o_rate:
            lines.append(f"\n/messages events/s: Synapse {s_rate:.0f}, ours {o_rate:.0f} "
                         f"({o_rate / s_rate:.1f}x)")
    lines.append(f"\nmachine: {ours.get('host')}")
    return "\n".join(lines)


def main() -> None:
    with open(sys.argv[1]) as theirs, open(sys.argv[2]) as mine:
        print(table(json.load(theirs), json.load(mine)))


if __name__ == "__main__":
    main()
