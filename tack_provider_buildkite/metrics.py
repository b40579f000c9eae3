"""Prometheus metrics of the Buildkite provider (bounded labels only)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge


API_REQUESTS = Counter(
    "tack_buildkite_api_requests_total",
    'Buildkite REST requests by endpoint and HTTP status ("error": no response).',
    ["endpoint", "code"],
)
RATE_LIMIT_REMAINING = Gauge(
    "tack_buildkite_rate_limit_remaining",
    "Requests left in Buildkite's current rate-limit window, by scope (rest: org, rest_user: token user).",
    ["scope"],
)
RATE_LIMITED = Counter(
    "tack_buildkite_rate_limited_total", "429 answers from Buildkite, by scope.", ["scope"]
)
WEBHOOKS = Counter(
    "tack_buildkite_webhooks_total",
    "Webhook deliveries by outcome (accepted, ignored, duplicate, unauthorized, malformed, too_large).",
    ["outcome"],
)
BUILDS = Counter(
    "tack_buildkite_builds_total",
    "Builds tied to runs, by how (created, adopted: found by meta-data, rejected: Buildkite refused).",
    ["outcome"],
)
DUPLICATE_BUILDS = Counter(
    "tack_buildkite_duplicate_builds_total", "Builds seen for a run that already has another build."
)
POLLS = Counter("tack_buildkite_polls_total", "Build reads made to learn a status, by reason.", ["reason"])
LOG_TAILS = Gauge("tack_buildkite_log_tails_active", "Jobs whose logs are being fetched for viewers.")
LOG_BYTES = Counter("tack_buildkite_log_bytes_total", "Job log bytes downloaded from Buildkite.")
