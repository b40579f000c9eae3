"""Fault injection for the fake builds.sr.ht: rules matched against each request's operation, free of I/O.

An operation is named by its first top-level field (``submit``, ``job``, ``jobs``, ``cancel``, ``me``...) or
``log`` for a log download; ``*`` matches everything. Each rule fires for its next ``count`` matching
requests, earliest rule first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


Action = Literal["status", "drop", "stall", "delay"]


@dataclass
class Rule:
    op: str
    action: Action
    count: int
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0
    after_effect: bool = False
    """``status``: answer the error after the request took effect (e.g. the job was created)."""

    def matches(self, op: str) -> bool:
        return self.count > 0 and self.op in ("*", op)

    @property
    def before(self) -> bool:
        """Whether the rule acts before the request takes effect."""
        return self.action == "delay" or (self.action == "status" and not self.after_effect)


class Faults:
    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def add(self, rule: Rule) -> None:
        self.rules.append(rule)

    def take(self, op: str, *, before: bool) -> Rule | None:
        """The first live rule for ``op`` acting at this point, used up once."""
        for rule in self.rules:
            if rule.matches(op) and rule.before == before:
                rule.count -= 1
                return rule
        return None

    def clear(self) -> None:
        self.rules.clear()

    @property
    def pending(self) -> int:
        """How many rule firings are still to come."""
        return sum(max(r.count, 0) for r in self.rules)
