"""A fake builds.sr.ht for tests: the GraphQL subset tack uses, job lifecycle, logs, auth, faults and
signed manifest triggers, on loopback (docs/sourcehut-api.md §12). Importable without pytest.

Modules: ``gql`` (a GraphQL document parser), ``execute`` (validation and execution with gqlgen's
answers), ``schema`` (the schema subset and its resolvers), ``state`` (jobs, tasks and their rules,
manifest checks), ``faults``, ``triggers`` (payload, Ed25519 signing) and ``fake`` (``FakeSourcehut``).

Typical use::

    async with FakeSourcehut() as srht:
        ...  # point the provider at srht.url with DEFAULT_TOKEN; it submits a job
        await srht.wait_for(lambda: srht.jobs)
        job = srht.jobs[0]
        srht.pick_up(job.id, setup_log="booting\\r\\n")
        srht.start_task(job.id, "build", log="make\\r\\n")
        srht.finish_task(job.id, "build", ok=False)  # the job is FAILED; later tasks stay PENDING
"""

from tests.fakes.sourcehut.fake import (
    ALL_GRANTS,
    DEFAULT_TOKEN,
    TACK_GRANTS,
    FakeSourcehut,
    JobPlan,
    RequestRecord,
    Token,
)
from tests.fakes.sourcehut.schema import User
from tests.fakes.sourcehut.state import ApiError, Job, StateError, Submission, Task, load_manifest
from tests.fakes.sourcehut.triggers import Delivery, verify


__all__ = [
    "ALL_GRANTS",
    "DEFAULT_TOKEN",
    "TACK_GRANTS",
    "ApiError",
    "Delivery",
    "FakeSourcehut",
    "Job",
    "JobPlan",
    "RequestRecord",
    "StateError",
    "Submission",
    "Task",
    "Token",
    "User",
    "load_manifest",
    "verify",
]
