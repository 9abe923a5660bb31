"""What bench_e2e.py prints: the machine line, the side-by-side table, taskmill's breakdowns."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from typing import Any

from _e2e_measure import python_speed

COLUMNS = [
    ("system", "system", "{}"),
    ("tasks/s", "tasks_per_s", "{:,.0f}"),
    ("total s", "seconds", "{:.2f}"),
    ("enqueue s", "enqueue_seconds", "{:.2f}"),
    ("pickup p50", "pickup_p50_ms", "{:.2f}"),
    ("p95", "pickup_p95_ms", "{:.2f}"),
    ("p99", "pickup_p99_ms", "{:.2f}"),
    ("round trip p50", "roundtrip_p50_ms", "{:.2f}"),
    ("p95", "roundtrip_p95_ms", "{:.2f}"),
]


def machine() -> str:
    """The run's first line: when, on what, how loaded and how fast."""
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}, a million Python additions in "
        f"{python_speed():.0f} ms"
    )


def _cell(row: dict[str, Any], key: str, form: str) -> str:
    value = row.get(key)
    if value is None:
        return row.get("error", "-") if key == "tasks_per_s" else "-"
    text = form.format(value)
    if key == "tasks_per_s" and row.get("timed_out"):
        text += " (timeout)"
    return text


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The side-by-side table (latencies in ms)."""
    cells = [[title for title, _, _ in COLUMNS]]
    cells += [[_cell(row, key, form) for _, key, form in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(rows: Sequence[dict[str, Any]]) -> str:
    """How each system was driven."""
    return "\n".join(
        f"  {row['system']}: {row.get('enqueue', '?')}; {row.get('workers', '?')} workers x "
        f"{row.get('concurrency', '?')}; {row.get('model', '?')}; "
        f"completed {row.get('completed', '?')}/{row.get('tasks', '?')}"
        for row in rows
        if "error" not in row
    )


def _pickup_split(mine: dict[str, Any]) -> str:
    return (
        "  taskmill pickup split (ms): created->dispatched p50 {claim_p50_ms} "
        "p95 {claim_p95_ms}; dispatched->started p50 {assign_p50_ms} p95 {assign_p95_ms}; "
        "handler p50 {run_p50_ms}; DB span of phase 1 {db_span_seconds} s".format(**mine)
    )


def _lateness(mine: dict[str, Any], due_in: float) -> str:
    return (
        "  taskmill start after the due time (ms), tasks due {due_in} s after submit: "
        "p50 {late_p50_ms} p95 {late_p95_ms} p99 {late_p99_ms}, min {late_min_ms}, "
        "max {late_max_ms}{late_cut}".format(
            due_in=due_in,
            late_cut=" (timeout)" if mine["late_timed_out"] else "",
            **mine,
        )
    )


def _cpu(mine: dict[str, Any]) -> list[str]:
    parts = mine["cpu_us_per_task"]
    listed = ", ".join(f"{k} {v}" for k, v in parts.items())
    return [
        f"  taskmill CPU per task in phase 1 (us): {listed}; total {sum(parts.values())} "
        f"(2 cores at 10,000 tasks/s leave 200 us per task for everything)",
        f"  machine busy during phase 1: {mine['machine_busy_cores']} of {os.cpu_count()} "
        f"cores, of which taskmill and its database backends {mine['own_busy_cores']}, "
        f"PostgreSQL's other processes {mine['postgres_other_cores']} (autovacuum, WAL "
        f"writer, this client's connection), this client "
        f"{mine['client_cores']}",
    ]


def taskmill_lines(rows: Sequence[dict[str, Any]], due_in: float) -> list[str]:
    """taskmill's breakdowns under the table; none when its latency phase did not run."""
    mine = next((r for r in rows if r["system"] == "taskmill" and "claim_p50_ms" in r), None)
    if not mine:
        return []
    lines = [_pickup_split(mine)]
    if "late_p50_ms" in mine:
        lines.append(_lateness(mine, due_in))
    if "cpu_us_per_task" in mine:
        lines += _cpu(mine)
    return lines


def report(rows: Sequence[dict[str, Any]], due_in: float) -> None:
    """Prints the table, how each system was driven, taskmill's breakdowns, the end load."""
    print()
    print(table(rows))
    print(details(rows))
    for line in taskmill_lines(rows, due_in):
        print(line)
    print(f"  load average at the end {os.getloadavg()[0]:.2f}")
