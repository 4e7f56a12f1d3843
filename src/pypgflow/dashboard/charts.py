"""Throughput over time as stacked bars, and its totals by workflow and by queue, for the
overview page. Laid out here (numbers only), drawn by the template."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pypgflow.insight import Throughput
from pypgflow.status import RunStatus

CHART_WIDTH = 720
CHART_HEIGHT = 120
#: bottom to top
STACK = ("completed", "failed", "cancelled", "going")


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    y: float
    height: float
    kind: str
    title: str


@dataclass
class Totals:
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    going: int = 0

    @property
    def total(self) -> int:
        return self.completed + self.failed + self.cancelled + self.going

    def add(self, status: RunStatus, count: int) -> None:
        kind = status.value if status.finished else "going"
        setattr(self, kind, getattr(self, kind) + count)


@dataclass
class Chart:
    bars: list[Bar] = field(default_factory=list)
    peak: int = 0
    by_workflow: dict[str, Totals] = field(default_factory=dict)
    by_queue: dict[str, Totals] = field(default_factory=dict)
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    start_label: str = ""
    end_label: str = ""


def throughput_chart(data: Throughput, now: datetime) -> Chart:
    """Bars of the runs created per bucket since ``data.since``, stacked by outcome."""
    bucket = timedelta(seconds=data.bucket_seconds)
    first = int(data.since.timestamp()) // data.bucket_seconds
    last = int(now.timestamp()) // data.bucket_seconds
    count = max(1, last - first + 1)
    buckets: dict[int, Totals] = {}
    chart = Chart()
    for row in data.rows:
        index = int(row.bucket_start.timestamp()) // data.bucket_seconds - first
        buckets.setdefault(index, Totals()).add(row.status, row.count)
        chart.by_workflow.setdefault(row.workflow, Totals()).add(row.status, row.count)
        chart.by_queue.setdefault(row.queue, Totals()).add(row.status, row.count)
    chart.peak = max((t.total for t in buckets.values()), default=0)
    slot = CHART_WIDTH / count
    scale = (CHART_HEIGHT - 4) / chart.peak if chart.peak else 0.0
    for index, totals in sorted(buckets.items()):
        if not 0 <= index < count:
            continue
        at = (first + index) * data.bucket_seconds
        label = datetime.fromtimestamp(at).strftime("%H:%M")
        base = float(CHART_HEIGHT)
        for kind in STACK:
            value = getattr(totals, kind)
            if not value:
                continue
            height = value * scale
            base -= height
            chart.bars.append(
                Bar(
                    index * slot + 1,
                    max(1.0, slot - 2),
                    base,
                    height,
                    kind,
                    f"{label}: {value} {kind}",
                )
            )
    chart.start_label = data.since.astimezone().strftime("%H:%M")
    chart.end_label = (now + bucket * 0).astimezone().strftime("%H:%M")
    return chart
