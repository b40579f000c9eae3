"""The control plane's Prometheus metrics. Labels are bounded: never repo, DID, rkey or branch."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info


BUILD_INFO = Info("tack_build", "tack version.")
JETSTREAM_EVENTS = Counter(
    "tack_jetstream_events_total", "Jetstream events by what became of them.", ["outcome"]
)
JETSTREAM_CONNECTED = Gauge("tack_jetstream_connected", "1 while the Jetstream connection is open.")
KNOT_FRAMES = Counter("tack_knot_frames_total", "Knot /events frames by what became of them.", ["outcome"])
KNOTS_CONNECTED = Gauge("tack_knots_connected", "Knot event streams currently open.")
KNOTS_WANTED = Gauge("tack_knots_wanted", "Knots hosting a registered repo.")
PIPELINES = Counter("tack_pipelines_total", "Pipeline triggers by decision.", ["decision"])
PUSHES = Counter(
    "tack_pushes_total",
    "Pushes (refUpdate events and recovered pushes) by what became of them.",
    ["outcome"],
)
WORKFLOW_LOAD_SECONDS = Histogram(
    "tack_workflow_load_seconds",
    "Time to load a commit's .tangled/workflows from its knot (git fetch and read).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RECOVERY_SCANS = Counter(
    "tack_recovery_scans_total",
    "Ref listings of repositories, looking for missed pushes, by result.",
    ["result"],
)
CANCELS = Counter(
    "tack_cancels_total",
    "Cancel requests delivered to providers, by outcome (done, retry: asked again later, dropped).",
    ["outcome"],
)
PULL_EVENTS = Counter(
    "tack_pull_events_total",
    "Pull request events: queued, retried, and what each became (pipeline, no_workflows, duplicate, not_authorized, cid_mismatch, …).",
    ["outcome"],
)
REGISTRATIONS_REFUSED = Counter(
    "tack_registrations_refused_total",
    "Repository records naming this spindle that were refused.",
    ["reason"],
)
WORKFLOWS_ROUTED = Counter(
    "tack_workflows_routed_total",
    "Workflows of accepted pipelines by provider ('none' when unroutable).",
    ["provider"],
)
SPAWN_CALLS = Counter(
    "tack_spawn_calls_total", "Spawn calls by provider and gRPC code.", ["provider", "code"]
)
PROVIDER_RPC_SECONDS = Histogram(
    "tack_provider_rpc_duration_seconds",
    "Unary provider RPC latency.",
    ["provider", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
DISPATCH_QUEUED = Gauge("tack_dispatch_queued", "Workflows waiting to be handed to a provider.")
STATUS_UPDATES = Counter(
    "tack_status_updates_total",
    "Provider status updates by outcome (applied, dropped, foreign).",
    ["provider", "outcome"],
)
STATUS_TRANSITIONS = Counter(
    "tack_workflow_status_transitions_total", "Accepted workflow statuses.", ["status"]
)
WATCH_CONNECTED = Gauge(
    "tack_provider_watch_connected", "1 while the WatchStatus stream is open.", ["provider"]
)
PROVIDER_UP = Gauge("tack_provider_up", "1 when the provider's health check answers SERVING.", ["provider"])
EVENTS_PUBLISHED = Counter("tack_events_published_total", "Records appended to the /events log.")
STATUSES_HELD = Gauge("tack_statuses_held", "Statuses waiting for their createdAt second.")
WS_CLIENTS = Gauge("tack_ws_clients", "Open WebSocket connections.", ["endpoint"])
WS_FRAMES = Counter("tack_ws_frames_sent_total", "Frames sent on WebSockets.", ["endpoint"])
WS_CLOSED_SLOW = Counter(
    "tack_ws_closed_slow_total", "WebSockets closed because the client did not read.", ["endpoint"]
)
WS_WRITER_ERRORS = Counter(
    "tack_ws_writer_errors_total", "WebSockets closed with 1011 because their writer failed.", ["endpoint"]
)
WS_CLOSE_HANDSHAKES = Counter(
    "tack_ws_close_handshakes_total",
    "WebSockets closed by tack, by whether the client's close reply came before the TCP close (replied, no_reply).",
    ["endpoint", "outcome"],
)
LOGS_REQUESTS = Counter("tack_logs_requests_total", "/logs requests by result.", ["result"])
LOGS_MESSAGES = Counter(
    "tack_logs_messages_total",
    "Provider Logs messages sent to /logs viewers, by whether they were encoded or shared from another viewer's encoding.",
    ["source"],
)
CI_REQUESTS = Counter(
    "tack_ci_requests_total",
    "CI API requests (sh.tangled.ci.* and did.json) by method and HTTP status (101: a log subscription upgraded).",
    ["method", "code"],
)
CI_LOG_FOLLOWS = Counter(
    "tack_ci_log_follows_total",
    "Workflow logs followed for log subscriptions, by how they went (complete, synthetic, resumed, incomplete).",
    ["outcome"],
)
WEBHOOKS = Counter(
    "tack_webhooks_total",
    "Webhook requests by provider and the HTTP status tack answered.",
    ["provider", "code"],
)
WEBHOOKS_FORWARDED = Counter(
    "tack_webhooks_forwarded_total",
    "Stored webhook deliveries handed to their provider, by the provider's HTTP answer.",
    ["provider", "code"],
)
WEBHOOKS_DROPPED = Counter(
    "tack_webhooks_dropped_total",
    "Stored webhook deliveries dropped unforwarded (queue_full, refused, unreadable).",
    ["provider", "reason"],
)
WEBHOOKS_QUEUED = Gauge(
    "tack_webhooks_queued", "Webhook deliveries stored, waiting for their provider.", ["provider"]
)
INPUT_EVENT_AGE = Gauge(
    "tack_input_last_event_age_seconds",
    "Seconds since an input stream delivered its last frame (knots: the quietest followed knot).",
    ["stream"],
)
INPUT_DISCONNECTED = Gauge(
    "tack_input_disconnected_seconds",
    "Seconds an input stream has been without a connection, 0 while connected (knots: the longest).",
    ["stream"],
)
HTTP_REJECTED = Counter("tack_http_rejected_total", "Requests refused before reaching a handler.", ["reason"])
OUTBOUND_FETCHES = Counter(
    "tack_outbound_fetches_total",
    "Outbound HTTP fetches (DID documents, PDS records) by target and result.",
    ["target", "result"],
)
SERVICE_AUTH = Counter(
    "tack_service_auth_total",
    "Service-auth checks of XRPC calls by result: ok, or the reason the token was refused.",
    ["result"],
)
RECONCILE_PASSES = Counter(
    "tack_reconcile_passes_total",
    "Reconciliations of the mirror with the PDSes, by result: complete, or partial (a DID could not be read).",
    ["result"],
)
RECONCILE_READS = Counter(
    "tack_reconcile_reads_total",
    "Collections listed from PDSes by reconciliation, by collection and result.",
    ["collection", "result"],
)
RECONCILE_CHANGES = Counter(
    "tack_reconcile_changes_total",
    "Records reconciliation found different from the mirror, by collection and what was done.",
    ["collection", "change"],
)
RECONCILE_DIDS_FAILING = Gauge(
    "tack_reconcile_dids_failing",
    "Owner and member DIDs whose records could not be read at the last attempt.",
)
RECONCILE_LAST_PASS = Gauge(
    "tack_reconcile_last_pass_timestamp_seconds",
    "When the last full reconciliation pass ended (Unix seconds).",
)
GIT_FETCHES = Counter(
    "tack_git_fetches_total",
    "Loads from knots over git (operation: workflows, refs) by outcome (ok or the failure reason).",
    ["operation", "outcome"],
)
GIT_FETCH_SECONDS = Histogram(
    "tack_git_fetch_duration_seconds",
    "Time to load from a knot over git, by operation.",
    ["operation"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
