"""The control plane's SQLite database: its versioned schema and opening it."""

from __future__ import annotations

import json
import sqlite3

from tack_common import sqlite as kit_sqlite


# Version 1: the schema of the first release (IF NOT EXISTS: databases made before versioning were at it).
V1 = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Jetstream mirror, keyed by the record (author DID, rkey).
CREATE TABLE IF NOT EXISTS members (
    did TEXT NOT NULL,
    rkey TEXT NOT NULL,
    subject TEXT NOT NULL,
    instance TEXT NOT NULL,
    PRIMARY KEY (did, rkey)
);
CREATE TABLE IF NOT EXISTS repos (
    did TEXT NOT NULL,
    rkey TEXT NOT NULL,
    name TEXT NOT NULL,
    knot TEXT NOT NULL,
    spindle TEXT NOT NULL,
    PRIMARY KEY (did, rkey)
);
CREATE INDEX IF NOT EXISTS repos_by_name ON repos (knot, did, name);
CREATE TABLE IF NOT EXISTS collaborators (
    did TEXT NOT NULL,
    rkey TEXT NOT NULL,
    subject TEXT NOT NULL,
    repo TEXT NOT NULL,
    PRIMARY KEY (did, rkey)
);
CREATE TABLE IF NOT EXISTS knot_cursors (
    knot TEXT PRIMARY KEY,
    cursor_ns INTEGER NOT NULL
);
-- Every pipeline trigger acted on, so a replayed trigger is recognised.
CREATE TABLE IF NOT EXISTS pipelines (
    knot TEXT NOT NULL,
    rkey TEXT NOT NULL,
    record TEXT NOT NULL,
    received_ns INTEGER NOT NULL,
    PRIMARY KEY (knot, rkey)
);
CREATE TABLE IF NOT EXISTS workflows (
    id INTEGER PRIMARY KEY,
    knot TEXT NOT NULL,
    rkey TEXT NOT NULL,
    name TEXT NOT NULL,
    provider TEXT,
    config TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    exit_code INTEGER,
    -- queued: waiting for Spawn; accepted: the provider has it; failed: tack failed it itself.
    dispatch TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL DEFAULT 0,
    -- When the current dispatch began; the give-up time counts from here.
    queued_ns INTEGER NOT NULL DEFAULT 0,
    -- Spawn this workflow alone (its pipeline's batch was rejected as a whole).
    solo INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    last_event_s INTEGER NOT NULL DEFAULT 0,
    UNIQUE (knot, rkey, name)
);
CREATE INDEX IF NOT EXISTS workflows_to_dispatch ON workflows (dispatch, next_attempt_ns);
CREATE INDEX IF NOT EXISTS workflows_by_status ON workflows (status, updated_ns);
-- Statuses accepted by the state machine but held for their createdAt second (see statuses.py).
CREATE TABLE IF NOT EXISTS status_queue (
    id INTEGER PRIMARY KEY,
    workflow_id INTEGER NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    error TEXT NOT NULL,
    exit_code INTEGER
);
CREATE INDEX IF NOT EXISTS status_queue_by_workflow ON status_queue (workflow_id, id);
-- The /events log: created is the cursor (Unix ns, strictly increasing).
CREATE TABLE IF NOT EXISTS events (
    created INTEGER PRIMARY KEY,
    rkey TEXT NOT NULL,
    nsid TEXT NOT NULL,
    frame TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS provider_cursors (
    provider TEXT PRIMARY KEY,
    after_seq INTEGER NOT NULL,
    -- The provider's outbox id (WatchStatus metadata) that after_seq counts in.
    outbox_id TEXT NOT NULL DEFAULT ''
);
"""


# Version 2: current Tangled (v1.16+). Repositories are identified by repo DIDs and verified against
# their knot; tack mints the pipelines of pushes, pull requests and manual runs itself, and the CI API
# reads pipelines by repo DID, commit and kind.
V2 = """
-- A repo record naming this spindle: 'legacy' (no repoDid: the 2025 protocol, authorized by knot,
-- owner and name), 'pending' (repoDid not yet verified against the knot), 'verified' or 'refused'.
ALTER TABLE repos ADD COLUMN repo_did TEXT NOT NULL DEFAULT '';
ALTER TABLE repos ADD COLUMN state TEXT NOT NULL DEFAULT 'legacy';
ALTER TABLE repos ADD COLUMN reason TEXT NOT NULL DEFAULT '';
ALTER TABLE repos ADD COLUMN next_check_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE repos ADD COLUMN checks INTEGER NOT NULL DEFAULT 0;
CREATE INDEX repos_by_repo_did ON repos (repo_did);
-- Push rights granted by the knot itself (sh.tangled.repo.collaboratorUpdate).
CREATE TABLE knot_collaborators (
    repo_did TEXT NOT NULL,
    subject TEXT NOT NULL,
    knot TEXT NOT NULL,
    PRIMARY KEY (repo_did, subject)
);
-- Knot members (sh.tangled.knot.memberUpdate): recorded, grant nothing on their own.
CREATE TABLE knot_members (
    knot TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (knot, subject)
);
-- Which protocol a knot speaks ('legacy': sh.tangled.pipeline triggers; 'current': refUpdate with a
-- repo DID), and whether the cursor is the knot's own `created` (else tack's clock, rewound on reconnect).
ALTER TABLE knot_cursors ADD COLUMN speaks TEXT NOT NULL DEFAULT '';
ALTER TABLE knot_cursors ADD COLUMN knot_clock INTEGER NOT NULL DEFAULT 0;
-- Pipelines as the CI API reads them. created_ns is unique and increasing: the queryPipelines cursor.
ALTER TABLE pipelines ADD COLUMN created_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pipelines ADD COLUMN repo_did TEXT NOT NULL DEFAULT '';
ALTER TABLE pipelines ADD COLUMN source_repo TEXT NOT NULL DEFAULT '';
-- The knot of source_repo (a fork's), where its commit is fetched from.
ALTER TABLE pipelines ADD COLUMN source_knot TEXT NOT NULL DEFAULT '';
ALTER TABLE pipelines ADD COLUMN kind TEXT NOT NULL DEFAULT '';
ALTER TABLE pipelines ADD COLUMN commit_sha TEXT NOT NULL DEFAULT '';
-- knot: a knot's sh.tangled.pipeline (2025 protocol); push, pull, manual: minted by tack; recovered:
-- minted for a push tack missed.
ALTER TABLE pipelines ADD COLUMN origin TEXT NOT NULL DEFAULT 'knot';
ALTER TABLE pipelines ADD COLUMN untrusted INTEGER NOT NULL DEFAULT 0;
-- Workflow times as the CI API reports them (whole seconds of the published statuses; 0 = not yet).
ALTER TABLE workflows ADD COLUMN started_s INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflows ADD COLUMN finished_s INTEGER NOT NULL DEFAULT 0;
-- Every push acted on, by repository and ref and commit, whichever way it arrived (a knot's
-- sh.tangled.pipeline or refUpdate, or recovery), so none runs twice. repo is the repo DID, or
-- "<knot>/<owner>/<name>" for a repository known only by name. state: queued (workflows not yet
-- loaded), done, skipped or failed; event holds what the worker needs.
CREATE TABLE pushes (
    repo TEXT NOT NULL,
    ref TEXT NOT NULL,
    new_sha TEXT NOT NULL,
    knot TEXT NOT NULL,
    state TEXT NOT NULL,
    event TEXT NOT NULL DEFAULT '{}',
    pipeline_rkey TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL DEFAULT 0,
    received_ns INTEGER NOT NULL,
    PRIMARY KEY (repo, ref, new_sha)
);
CREATE INDEX pushes_queued ON pushes (state, next_attempt_ns);
-- The newest commit tack saw per ref of each repository, to find pushes it missed.
CREATE TABLE repo_refs (
    repo_did TEXT NOT NULL,
    ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY (repo_did, ref)
);
"""


def _v2_backfill(conn: sqlite3.Connection) -> None:
    """Give pipelines of version 1 their query columns, and each a unique created_ns."""
    last = 0
    rows = conn.execute(
        "SELECT rowid, received_ns, record FROM pipelines ORDER BY received_ns, rowid"
    ).fetchall()
    for rowid, received_ns, record in rows:
        created = max(int(received_ns), last + 1)
        last = created
        kind, commit = _kind_and_commit(record)
        conn.execute(
            "UPDATE pipelines SET created_ns=?, kind=?, commit_sha=? WHERE rowid=?",
            (created, kind, commit, rowid),
        )
    conn.execute("CREATE UNIQUE INDEX pipelines_by_created ON pipelines (created_ns)")
    conn.execute("CREATE INDEX pipelines_by_repo ON pipelines (repo_did, created_ns)")
    conn.execute("CREATE INDEX pipelines_by_commit ON pipelines (repo_did, commit_sha, created_ns)")
    conn.execute("CREATE INDEX pipelines_by_rkey ON pipelines (rkey)")


def _kind_and_commit(record: str) -> tuple[str, str]:
    """The trigger kind and the commit built, from a stored sh.tangled.pipeline record ("" when unreadable)."""
    try:
        meta = json.loads(record).get("triggerMetadata") or {}
        kind = str(meta.get("kind") or "")
        detail = (
            meta.get({"push": "push", "pull_request": "pullRequest", "manual": "manual"}.get(kind, "")) or {}
        )
        commit = (
            detail.get({"push": "newSha", "pull_request": "sourceSha", "manual": "sha"}[kind]) if kind else ""
        )
    except (ValueError, AttributeError, KeyError, TypeError):
        return "", ""
    return kind, commit if isinstance(commit, str) else ""


# Cancels asked of tack: 'requested' until the workflow's provider has been told ('done', or 'dropped'
# when it cannot be: no such provider or run).
V_CANCEL = """
ALTER TABLE workflows ADD COLUMN cancel TEXT NOT NULL DEFAULT '';
ALTER TABLE workflows ADD COLUMN cancel_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflows ADD COLUMN next_cancel_ns INTEGER NOT NULL DEFAULT 0;
CREATE INDEX workflows_to_cancel ON workflows (cancel, next_cancel_ns);
"""

# Service-auth nonces (jti) consumed until their token expires (tack_control/identity/replay.py).
V_SERVICE_AUTH_NONCES = """
CREATE TABLE service_auth_nonces (
    iss TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_s INTEGER NOT NULL,
    PRIMARY KEY (iss, jti)
) WITHOUT ROWID;
CREATE INDEX service_auth_nonces_by_expiry ON service_auth_nonces (expires_s);
"""

# The CI API's queryPipelines answers ``total`` from these counts, kept by triggers, rather than counting
# a repository's rows on every page.
V_CI_COUNTS = """
CREATE TABLE pipeline_counts (
    repo_did TEXT NOT NULL,
    kind TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (repo_did, kind)
) WITHOUT ROWID;
INSERT INTO pipeline_counts (repo_did, kind, n)
    SELECT repo_did, kind, COUNT(*) FROM pipelines WHERE repo_did <> '' GROUP BY repo_did, kind;
CREATE TRIGGER pipeline_counts_insert AFTER INSERT ON pipelines WHEN NEW.repo_did <> '' BEGIN
    INSERT INTO pipeline_counts (repo_did, kind, n) VALUES (NEW.repo_did, NEW.kind, 1)
        ON CONFLICT (repo_did, kind) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER pipeline_counts_delete AFTER DELETE ON pipelines WHEN OLD.repo_did <> '' BEGIN
    UPDATE pipeline_counts SET n = n - 1 WHERE repo_did = OLD.repo_did AND kind = OLD.kind;
END;
CREATE TRIGGER pipeline_counts_update AFTER UPDATE OF repo_did, kind ON pipelines
WHEN OLD.repo_did <> NEW.repo_did OR OLD.kind <> NEW.kind BEGIN
    UPDATE pipeline_counts SET n = n - 1 WHERE OLD.repo_did <> '' AND repo_did = OLD.repo_did AND kind = OLD.kind;
    INSERT INTO pipeline_counts (repo_did, kind, n) SELECT NEW.repo_did, NEW.kind, 1 WHERE NEW.repo_did <> ''
        ON CONFLICT (repo_did, kind) DO UPDATE SET n = n + 1;
END;
"""

# Webhook deliveries stored until their provider takes them (web/webhooks.py), oldest first.
V_WEBHOOK_QUEUE = """
CREATE TABLE webhook_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT NOT NULL,
    received_ns INTEGER NOT NULL,
    -- The HandleWebhookRequest to send, serialized.
    request BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX webhook_queue_by_provider ON webhook_queue (provider, id, size);
"""

# The readiness write probe's scratch rows (tack_common/storage.py).
V_WRITE_PROBE = """
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
"""


# Pull requests (current Tangled): each Jetstream pull or pull.status event that may concern a
# repository here, until decided (queued → done, skipped or rejected with the reason), and each
# (pull, commit, action) run, so none runs twice.
V_PULLS = """
CREATE TABLE pull_events (
    id INTEGER PRIMARY KEY,
    uri TEXT NOT NULL,
    collection TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL DEFAULT 0,
    pipeline_rkey TEXT NOT NULL DEFAULT '',
    received_ns INTEGER NOT NULL
);
CREATE INDEX pull_events_queued ON pull_events (state, next_attempt_ns);
CREATE INDEX pull_events_by_uri ON pull_events (uri);
CREATE TABLE pull_runs (
    uri TEXT NOT NULL,
    sha TEXT NOT NULL,
    action TEXT NOT NULL,
    pipeline_rkey TEXT NOT NULL DEFAULT '',
    received_ns INTEGER NOT NULL,
    PRIMARY KEY (uri, sha, action)
);
"""

# Pull requests, what each event decided and which occasion a run answers: a round of the pull
# (``round <n>``: opened, synchronize) or one status record (``status <actor>/<rkey>``: reopened,
# closed, merged). A (pull, occasion, commit) runs once, so a replay or a record edit that adds no
# round runs nothing new, while each new status record does. Runs remembered so far keep their action
# as occasion.
V_PULL_OCCASIONS = """
ALTER TABLE pull_events ADD COLUMN event_rkey TEXT NOT NULL DEFAULT '';
ALTER TABLE pull_events ADD COLUMN outcome TEXT NOT NULL DEFAULT '';
CREATE INDEX pull_events_received ON pull_events (received_ns);
CREATE TABLE pull_runs_v2 (
    uri TEXT NOT NULL,
    occasion TEXT NOT NULL,
    sha TEXT NOT NULL,
    action TEXT NOT NULL,
    pipeline_rkey TEXT NOT NULL DEFAULT '',
    received_ns INTEGER NOT NULL,
    PRIMARY KEY (uri, occasion, sha)
);
INSERT INTO pull_runs_v2 (uri, occasion, sha, action, pipeline_rkey, received_ns)
    SELECT uri, action, sha, action, pipeline_rkey, received_ns FROM pull_runs;
DROP TABLE pull_runs;
ALTER TABLE pull_runs_v2 RENAME TO pull_runs;
CREATE INDEX pull_runs_received ON pull_runs (received_ns);
"""

SCHEMA = kit_sqlite.Schema(
    "",
    (
        V1,
        V2,
        _v2_backfill,
        V_CANCEL,
        V_SERVICE_AUTH_NONCES,
        V_CI_COUNTS,
        V_WEBHOOK_QUEUE,
        V_WRITE_PROBE,
        V_PULLS,
        V_PULL_OCCASIONS,
    ),
)


def open_db(path: str) -> sqlite3.Connection:
    """Open the control plane database, creating it or migrating it to the current schema version."""
    conn = kit_sqlite.connect(path)
    try:
        kit_sqlite.migrate(conn, SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """A value from the meta table."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Store a value in the meta table."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value",
        (key, value),
    )
