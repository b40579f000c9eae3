"""What the provider remembers about each run's job, in the kit's store.

A run's ``data`` holds the job prepared at Spawn (``manifest``, ``tags``, ``note``, ``secrets``,
``visibility``, ``run_tag``, ``tasks``) and the progress of submitting it:

- ``phase``: ``queued`` (nothing sent yet), ``submitting`` (a submit may have reached builds.sr.ht:
  look for the job by its run tag before submitting again), ``submitted`` (``job`` is its id) or
  ``rejected`` (builds.sr.ht refused the manifest; the run failed);
- ``sent_ns``: when the last submit that may have reached builds.sr.ht was sent;
- ``cancel``: a cancel was requested.

The ``sourcehut_jobs`` table maps job ids to runs (one job per run: the id is unique, and so is the run).
All methods are synchronous: a read-modify-write here is atomic on the loop.
"""

from __future__ import annotations

import time

from tack_common.notify import Notifier
from tack_common.sqlite import Schema
from tack_provider_kit.store import Attached, BaseRunBook, ProviderStore


V1 = """
CREATE TABLE sourcehut_jobs (
    job_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL UNIQUE REFERENCES runs (id) ON DELETE CASCADE,
    created_ns INTEGER NOT NULL
);
"""

SCHEMA = Schema("sourcehut", (V1,))

QUEUED, SUBMITTING, SUBMITTED, REJECTED = "queued", "submitting", "submitted", "rejected"


class RunBook(BaseRunBook):
    """Reads and writes the sourcehut side of runs."""

    def __init__(self, store: ProviderStore) -> None:
        super().__init__(store)
        self.attached = Notifier()

    def job_of(self, run_id: int) -> int | None:
        """The run's job id, once known."""
        data = self.data(run_id)
        job = None if data is None else data.get("job")
        return job if isinstance(job, int) and not isinstance(job, bool) else None

    def run_for_job(self, job_id: int) -> int | None:
        """The run a job belongs to."""
        row = self.store.conn.execute(
            "SELECT run_id FROM sourcehut_jobs WHERE job_id=?", (job_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def attach(self, run_id: int, job_id: int) -> Attached:
        """Make ``job_id`` the run's job, unless the run already has one (``same`` or ``other``)."""
        attached = self.store.attach(
            run_id,
            "job",
            job_id,
            identity=lambda job: job,
            record=lambda conn: conn.execute(
                "INSERT INTO sourcehut_jobs (job_id, run_id, created_ns) VALUES (?, ?, ?)",
                (job_id, run_id, time.time_ns()),
            ),
            phase=SUBMITTED,
        )
        if attached == "attached":
            self.attached.notify()
        return attached
