"""What must hold after a chaos run, checked on what the run observed. Free of I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tack_common import status as st
from tests.support.stack import TERMINAL


@dataclass(frozen=True)
class Expected:
    """A workflow the harness triggered and how its script says it ends."""

    knot: str
    rkey: str
    workflow: str
    provider: str
    outcome: str


def check_statuses(
    expected: Sequence[Expected], seen: Mapping[tuple[str, str, str], Sequence[str]]
) -> list[str]:
    """Every workflow ended exactly once, as scripted (or failed with a reason), never moving backwards."""
    violations = []
    for wf in expected:
        key = (wf.knot, wf.rkey, wf.workflow)
        statuses = list(seen.get(key, ()))
        terminal = [s for s in statuses if s in TERMINAL]
        if len(terminal) != 1:
            violations.append(f"{key}: {len(terminal)} terminal statuses in {statuses}")
            continue
        ranks = [st.rank(st.from_name(s)) for s in statuses]
        if ranks != sorted(set(ranks)):
            violations.append(f"{key}: statuses out of order or repeated: {statuses}")
        if terminal[0] != wf.outcome:
            violations.append(f"{key}: ended {terminal[0]}, scripted {wf.outcome}")
    return violations


def check_single_start(starts: Mapping[tuple[str, str, str], int], expected: Sequence[Expected]) -> list[str]:
    """No workflow was started more than once at its provider (and each was started)."""
    violations = []
    for wf in expected:
        count = starts.get((wf.knot, wf.rkey, wf.workflow), 0)
        if count != 1:
            violations.append(f"{(wf.knot, wf.rkey, wf.workflow)}: started {count} times at {wf.provider}")
    return violations
