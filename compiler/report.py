"""What a compile did: per pass its time, node counts and which rules fired how often."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any


def ops_delta(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    """Per op type, how its count changed (zero changes left out), sorted by op."""
    return {op: after.get(op, 0) - before.get(op, 0) for op in sorted(set(before) | set(after))
            if after.get(op, 0) != before.get(op, 0)}


@dataclasses.dataclass
class PassRecord:
    """One pass of one compile."""

    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    modified: bool
    fired: dict[str, int] = dataclasses.field(default_factory=dict)
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    #: op type -> change in its count (only ops whose count changed)
    ops_delta: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CompileReport:
    """The record of one ``optimize`` call."""

    level: int
    target: str
    backend: str
    pipeline: list[str]
    passes: list[PassRecord] = dataclasses.field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    ops_before: dict[str, int] = dataclasses.field(default_factory=dict)
    ops_after: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.passes)

    def fired(self) -> Counter[str]:
        """Rule firings summed over every pass."""
        total: Counter[str] = Counter()
        for record in self.passes:
            total.update(record.fired)
        return total

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "target": self.target, "backend": self.backend,
                "pipeline": list(self.pipeline), "seconds": round(self.seconds, 6),
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "ops_before": dict(self.ops_before), "ops_after": dict(self.ops_after),
                "passes": [p.to_json() for p in self.passes]}

    def summary(self) -> str:
        """A plain-text table, one pass a line."""
        lines = [f"O{self.level} for {self.target} / {self.backend}: "
                 f"{self.nodes_before} -> {self.nodes_after} nodes in {self.seconds:.2f} s"]
        for p in self.passes:
            fired = ", ".join(f"{k} x{v}" for k, v in sorted(p.fired.items()))
            lines.append(f"  {p.name:<28} {p.seconds * 1e3:8.1f} ms "
                         f"{p.nodes_before:6d} -> {p.nodes_after:<6d} {fired}")
        return "\n".join(lines)
