"""Figures, each beside a baseline measured in the same run, and the table they make."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Row:
    scenario: str
    measure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    # "higher" when a bigger figure is better (throughput), "lower" for latencies.
    better: str = "higher"
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f} {unit}"


def table(rows: list[Row]) -> str:
    """A Markdown table (readable as plain text too)."""
    header = ["scenario", "measure", "hourglass", "baseline", "ratio", "target", "met"]
    lines = [header]
    notes = []
    for row in rows:
        ratio = row.ratio
        baseline = (
            f"{_number(row.baseline, row.unit)} ({row.baseline_name})"
            if row.baseline is not None
            else row.baseline_name or "-"
        )
        met = "" if row.met is None else ("met" if row.met else "MISSED")
        value = _number(row.value, row.unit) if row.value is not None else (row.note or "n/a")
        measure = row.measure
        if row.note and row.value is not None:
            notes.append(row.note)
            measure += f" [{len(notes)}]"
        lines.append(
            [
                row.scenario,
                measure,
                value,
                baseline,
                f"{ratio:.2f}x" if ratio is not None else "-",
                row.target or "-",
                met,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if notes:
        out.append("")
        out += [f"[{n}] {note}" for n, note in enumerate(notes, 1)]
    return "\n".join(out)


def save(rows: list[Row], extra: dict[str, object], path: Path) -> None:
    path.write_text(json.dumps({"rows": [asdict(r) for r in rows], **extra}, indent=2, default=str))
