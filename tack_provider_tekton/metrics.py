"""Prometheus metrics of the Tekton provider (bounded labels only)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge


API_REQUESTS = Counter(
    "tack_tekton_api_requests_total",
    'Kubernetes API requests by operation and HTTP status ("error": no answer).',
    ["operation", "code"],
)
PIPELINE_RUNS = Counter(
    "tack_tekton_pipelineruns_total",
    "PipelineRuns tied to runs, by how (created, adopted: found by name after an unknown outcome,"
    " rejected: refused by the API server, foreign: the name is taken by an object tack did not make).",
    ["outcome"],
)
WATCH_RESTARTS = Counter(
    "tack_tekton_watch_restarts_total",
    "PipelineRun watches reopened, by why (ended: the server closed it, error, gone: 410, relist).",
    ["reason"],
)
WATCH_CONNECTED = Gauge("tack_tekton_watch_connected", "1 while the PipelineRun watch is open.")
LOG_STREAMS = Gauge("tack_tekton_log_streams_active", "Container logs being read for viewers.")
LOG_BYTES = Counter("tack_tekton_log_bytes_total", "Pod log bytes read from the API server.")
