"""Prometheus metrics every provider exports (labels bounded: provider, method, code, status)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Info


BUILD_INFO = Info("tack_provider_build", "Provider name and version.")
RUNS_ACCEPTED = Counter("tack_provider_runs_accepted_total", "Runs newly accepted by Spawn.", ["provider"])
SPAWN_REJECTED = Counter(
    "tack_provider_spawn_rejected_total", "Spawn calls refused with INVALID_ARGUMENT.", ["provider"]
)
STATUS_UPDATES = Counter(
    "tack_provider_status_updates_total", "Status changes published to the outbox.", ["provider", "status"]
)
STREAMS_ACTIVE = Gauge("tack_provider_streams_active", "Open server streams.", ["method"])
