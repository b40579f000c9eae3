"""A fake Buildkite for tests: REST API v2, job logs and signed webhooks on loopback (docs/buildkite-api.md §10).

Modules: ``config`` (users, tokens, pipelines, knobs), ``state`` (the I/O-free
model and its state rules), ``logs`` (agent-style log bytes), ``render``
(JSON shapes), ``ratelimit``, ``listing`` (filters, ``Link`` pagination),
``webhooks`` (payloads, signing, delivery), ``scenarios``, ``app`` (REST
routes), ``control`` (``/__fake`` routes) and ``fake`` (``FakeBuildkite``).

Typical use::

    async with FakeBuildkite("acme", {"ci": [JobTemplate("unit", "unit", "pytest")]}) as bk:
        bk.add_webhook_target(receiver_url, "secret", "signature")
        ...  # point the client at bk.url with DEFAULT_TOKEN, create a build
        bk.advance(bk.builds[0], "unit", "running", log_append="collected 3 items\n")
        bk.advance(bk.builds[0], "unit", "passed")
        await bk.wait_webhooks_idle()
"""

from tests.fakes.buildkite.app import RequestRecord
from tests.fakes.buildkite.config import (
    ALL_SCOPES,
    DEFAULT_TOKEN,
    JobTemplate,
    Knobs,
    PipelineLike,
    PipelineSpec,
    Scenario,
    TokenInfo,
    User,
)
from tests.fakes.buildkite.fake import FakeBuildkite
from tests.fakes.buildkite.logs import TIMEOUT_LINE, JobLog
from tests.fakes.buildkite.state import ApiError, Build, Job, StateError
from tests.fakes.buildkite.webhooks import (
    WebhookDelivery,
    WebhookTarget,
    compact_json,
    ping_payload,
    signature_header,
)


__all__ = [
    "ALL_SCOPES",
    "DEFAULT_TOKEN",
    "TIMEOUT_LINE",
    "ApiError",
    "Build",
    "FakeBuildkite",
    "Job",
    "JobLog",
    "JobTemplate",
    "Knobs",
    "PipelineLike",
    "PipelineSpec",
    "RequestRecord",
    "Scenario",
    "StateError",
    "TokenInfo",
    "User",
    "WebhookDelivery",
    "WebhookTarget",
    "compact_json",
    "ping_payload",
    "signature_header",
]
