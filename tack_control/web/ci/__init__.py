"""The current Tangled face (v1.16+): the ``sh.tangled.ci.*`` XRPC methods the appview reads, and did.json.

``queryPipelines``, ``getPipeline`` and ``describeWorkflowDefinition`` answer
JSON (:mod:`handlers`, over :mod:`store` and :mod:`objects`);
``subscribePipelineLogs`` streams logs as CBOR frames (:mod:`subscribe`,
:mod:`follow`, :mod:`logcbor`); :mod:`didweb` serves the DID document;
:mod:`actions` runs and cancels pipelines for callers with push rights.
"""

from __future__ import annotations

from aiohttp.typedefs import Handler

from tack_control.config import Settings
from tack_control.web.ci import actions, handlers, subscribe


OLD_SUBSCRIBE = "sh.tangled.ci.pipeline.subscribeLogs"
"""The log subscription's name before the ``sh.tangled.ci.*`` rename (docs/tangled-current.md §8.11): same
parameters, frames and errors."""
RESUME_WINDOW_S = 120.0
"""How long a log subscription waits for a provider that went away before it gives that log up."""


def methods(settings: Settings) -> dict[str, tuple[str, Handler]]:
    """The CI API's XRPC methods: NSID → (HTTP verb, handler)."""
    logs = subscribe.make_handler(
        settings.ping_interval_s, settings.send_timeout_s, settings.logs_connect_timeout_s, RESUME_WINDOW_S
    )
    return {
        **actions.METHODS,
        handlers.QUERY: ("GET", handlers.query_pipelines),
        handlers.GET: ("GET", handlers.get_pipeline),
        handlers.DESCRIBE: ("GET", handlers.make_describe()),
        subscribe.NSID: ("GET", logs),
        OLD_SUBSCRIBE: ("GET", logs),
    }
