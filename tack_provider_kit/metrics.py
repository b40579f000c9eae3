"""Prometheus metrics every provider exports (labels bounded: provider, method, code, status)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info


BUILD_INFO = Info("tack_provider_build", "Provider name and version.")
RUNS_ACCEPTED = Counter("tack_provider_runs_accepted_total", "Runs newly accepted by Spawn.", ["provider"])
SPAWN_REJECTED = Counter(
    "tack_provider_spawn_rejected_total", "Spawn calls refused with INVALID_ARGUMENT.", ["provider"]
)
STATUS_UPDATES = Counter(
    "tack_provider_status_updates_total", "Status changes published to the outbox.", ["provider", "status"]
)
GRPC_REQUESTS = Counter(
    "tack_provider_grpc_requests_total",
    "gRPC calls served, by method and final status code.",
    ["method", "code"],
)
GRPC_DURATION = Histogram(
    "tack_provider_grpc_request_duration_seconds",
    "Time to answer unary gRPC calls.",
    ["method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
STREAMS_ACTIVE = Gauge("tack_provider_streams_active", "Open server streams.", ["method"])
