"""Prometheus metrics of the sourcehut provider (bounded labels only)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge


API_REQUESTS = Counter(
    "tack_sourcehut_api_requests_total",
    'builds.sr.ht requests by operation and HTTP status ("error": no answer).',
    ["operation", "code"],
)
THROTTLED = Counter(
    "tack_sourcehut_throttled_total", "Answers 429 or 503 from builds.sr.ht (every request paused)."
)
JOBS = Counter(
    "tack_sourcehut_jobs_total",
    "Jobs tied to runs, by how (submitted; found: by the run tag after an unknown outcome; rejected: refused"
    " by builds.sr.ht; gone: a job that no longer exists).",
    ["outcome"],
)
READ_FAILURES = Counter(
    "tack_sourcehut_job_read_failures_total",
    "Job status reads without a usable answer (retried at the next poll).",
)
POLLS = Counter(
    "tack_sourcehut_polls_total", "Job status reads, by why (poll, cancel, submitted).", ["reason"]
)
LOG_READS = Gauge("tack_sourcehut_log_tails_active", "Task logs being read for viewers.")
LOG_BYTES = Counter("tack_sourcehut_log_bytes_total", "Log bytes read from builds.sr.ht.")
