"""A workflow's DAG laid out for SVG: steps in columns by depth, edges as curves.

Laid out here, drawn by the templates (``_graph.html``): each step goes in the column of its
longest path from a root, so that every edge points right; within a column, steps are ordered
by the mean row of their dependencies (one pass, which untangles the usual fan-out/fan-in), then
by their declaration order. The same layout draws a registered workflow (from its code), a
workflow known only from its stored runs, and a run, whose nodes carry their step's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NODE_WIDTH = 168
NODE_HEIGHT = 44
COLUMN_GAP = 56
ROW_GAP = 18
MARGIN = 12


@dataclass(frozen=True)
class GraphStep:
    """What the layout needs of a step: its name, dependencies, and how to show it."""

    name: str
    depends_on: tuple[str, ...]
    #: a CSS state class: waiting, ready, running, completed, skipped, failed, cancelled, or
    #: "defined"
    state: str = "defined"
    #: a second line: a map step's element counts, attempts, a duration
    detail: str = ""
    is_map: bool = False


@dataclass(frozen=True)
class Node:
    step: GraphStep
    x: int
    y: int
    width: int = NODE_WIDTH
    height: int = NODE_HEIGHT

    @property
    def label(self) -> str:
        name = self.step.name
        return name if len(name) <= 22 else name[:21] + "…"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    #: the SVG path's d attribute (numbers only: nothing stored goes in it)
    path: str
    state: str


@dataclass(frozen=True)
class Graph:
    width: int
    height: int
    nodes: list[Node]
    edges: list[Edge]


def layout(steps: Sequence[GraphStep]) -> Graph:
    """Positions for ``steps`` (in declaration order; unknown dependencies are ignored)."""
    by_name = {s.name: s for s in steps}
    order = {s.name: i for i, s in enumerate(steps)}
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in depth:
            return depth[name]
        deps = [d for d in by_name[name].depends_on if d in by_name and d not in seen]
        value = 1 + max((depth_of(d, seen | {name}) for d in deps), default=-1)
        depth[name] = value
        return value

    for s in steps:
        depth_of(s.name)
    columns: dict[int, list[str]] = {}
    for s in steps:
        columns.setdefault(depth[s.name], []).append(s.name)
    row: dict[str, float] = {}
    for column in sorted(columns):
        names = columns[column]

        def weight(name: str) -> tuple[float, int]:
            deps = [row[d] for d in by_name[name].depends_on if d in row]
            return (sum(deps) / len(deps) if deps else float(order[name]), order[name])

        names.sort(key=weight)
        for index, name in enumerate(names):
            row[name] = float(index)
    tallest = max((len(c) for c in columns.values()), default=0)
    height = MARGIN * 2 + tallest * NODE_HEIGHT + max(0, tallest - 1) * ROW_GAP
    nodes: dict[str, Node] = {}
    for column, names in columns.items():
        offset = (tallest - len(names)) * (NODE_HEIGHT + ROW_GAP) / 2
        for index, name in enumerate(names):
            nodes[name] = Node(
                step=by_name[name],
                x=MARGIN + column * (NODE_WIDTH + COLUMN_GAP),
                y=round(MARGIN + offset + index * (NODE_HEIGHT + ROW_GAP)),
            )
    edges = []
    for s in steps:
        for dep in s.depends_on:
            if dep not in nodes:
                continue
            a, b = nodes[dep], nodes[s.name]
            x1, y1 = a.x + a.width, a.y + a.height // 2
            x2, y2 = b.x, b.y + b.height // 2
            bend = max(20, (x2 - x1) // 2)
            edges.append(
                Edge(
                    dep,
                    s.name,
                    f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2 - 6},{y2}",
                    a.step.state,
                )
            )
    width = MARGIN * 2 + len(columns) * NODE_WIDTH + max(0, len(columns) - 1) * COLUMN_GAP
    return Graph(width=width, height=height, nodes=[nodes[s.name] for s in steps], edges=edges)
