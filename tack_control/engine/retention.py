"""Storage bounds: what the control plane forgets once it is older than the retention window.

Events older than the window are deleted; a client whose cursor is inside the
window resumes exactly as before, and one further back simply starts at the
oldest event kept. Finished workflows and their pipelines go too, and the
record of pushes and pull request events acted on (and of the pull request
runs remembered so that a replay runs nothing new: Jetstream replays far less
than the window); unfinished ones are kept whatever their age.
"""

from __future__ import annotations

from dataclasses import dataclass

from tack_control.engine.eventlog import EventLog
from tack_control.engine.statuses import StatusBook


@dataclass(frozen=True)
class Pruned:
    """How many rows one pass removed."""

    events: int
    workflows: int
    pipelines: int
    pushes: int
    pull_events: int
    pull_runs: int


def prune(book: StatusBook, events: EventLog, cutoff_ns: int) -> Pruned:
    """Delete what is older than ``cutoff_ns``, in one transaction."""
    with book.transaction() as conn:
        removed_events = events.prune(cutoff_ns)
        workflows = conn.execute(
            "DELETE FROM workflows WHERE created_ns < ? AND status NOT IN ('', 'pending', 'running')",
            (cutoff_ns,),
        ).rowcount
        pipelines = conn.execute(
            "DELETE FROM pipelines WHERE received_ns < ?"
            " AND NOT EXISTS (SELECT 1 FROM workflows w WHERE w.knot = pipelines.knot AND w.rkey = pipelines.rkey)",
            (cutoff_ns,),
        ).rowcount
        # A push is remembered (so it never runs twice) as long as the window; one still queued is kept.
        pushes = conn.execute(
            "DELETE FROM pushes WHERE received_ns < ? AND state <> 'queued'", (cutoff_ns,)
        ).rowcount
        pull_events = conn.execute(
            "DELETE FROM pull_events WHERE received_ns < ? AND state <> 'queued'", (cutoff_ns,)
        ).rowcount
        pull_runs = conn.execute("DELETE FROM pull_runs WHERE received_ns < ?", (cutoff_ns,)).rowcount
    return Pruned(removed_events, workflows, pipelines, pushes, pull_events, pull_runs)
