"""What a provider implements: only its CI-specific logic.

The runtime (:mod:`tack_provider_kit.servicer`) validates requests, keeps Spawn
idempotent, stores runs and statuses, serves WatchStatus from the outbox and
turns these methods into the gRPC contract.
"""

from __future__ import annotations

import abc
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence

from tack_common import status as st
from tack_common.pb import provider_pb2 as pb
from tack_common.supervise import Supervisor
from tack_provider_kit.store import JSONDict, ProviderStore, Run


log = logging.getLogger(__name__)


class InvalidArgument(Exception):
    """A request or workflow config the provider cannot use; the message names the field at fault."""


class Unavailable(Exception):
    """The provider cannot accept work right now (its CI is unreachable); the caller should retry."""


class Provider(abc.ABC):
    """One CI system behind tack. Subclasses set ``name`` and implement the abstract methods."""

    name: str = ""
    version: str = "0.1.0"
    description: str = ""
    simulation: bool = False
    capabilities = pb.Capabilities(cancel=True, live_logs=True, webhooks=False)

    def __init__(self, store: ProviderStore) -> None:
        self.store = store
        self.supervisor = Supervisor()
        """Runs every background task of the provider (the server reports NOT_SERVING while one is down)."""
        self.fatal: str | None = None
        """Why the provider stopped the process (its configuration or credentials cannot work), if it did."""

    async def startup(self) -> None:  # noqa: B027 - optional hook
        """Prepare before the server reports SERVING (check credentials, resume runs...)."""

    async def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Stop background work; runs left unfinished are resumed by the next :meth:`startup`."""

    def ready(self) -> bool:
        """Whether the provider can serve now; health reports NOT_SERVING while False."""
        return not self.problems()

    def problems(self) -> list[str]:
        """Why the provider cannot serve now, one sentence each (empty: it can); health reports them."""
        return []

    def stop_process(self, reason: str) -> None:
        """Shut the process down gracefully because nothing can work as configured; it exits with status 2."""
        self.fatal = reason[:500]
        log.error("provider cannot work as configured; stopping", extra={"reason": self.fatal})
        os.kill(os.getpid(), signal.SIGTERM)

    @abc.abstractmethod
    def prepare(self, request: pb.SpawnRequest, workflow: pb.Workflow) -> JSONDict:
        """Validate one workflow of a Spawn and return the state to store with its new run.

        Raise :class:`InvalidArgument` naming the offending key. Must not start
        anything: nothing of the request runs unless every workflow prepares.
        """

    @abc.abstractmethod
    async def start(self, run: Run) -> None:
        """Begin a newly accepted run in the background and return promptly (run background work with
        ``self.supervisor.spawn``, so that a failure is logged, counted and restarted)."""

    @abc.abstractmethod
    def log(self, run: Run) -> AsyncIterator[Sequence[pb.LogLine] | pb.LogsResponse]:
        """The run's log in chunks: what exists now, then new lines live until the run's log ends.

        A chunk is a sequence of lines, or a ready LogsResponse (sent as it is
        when it fits one message, which spares copying every line).
        """

    @abc.abstractmethod
    async def cancel(self, run: Run) -> st.Status:
        """Stop a run; return its status afterwards. Must be a no-op for a finished run."""

    async def handle_webhook(self, request: pb.HandleWebhookRequest) -> pb.HandleWebhookResponse:
        """Answer an HTTP request forwarded from /webhooks/<name>; by default there are no webhooks."""
        body = b'{"error":"NotFound","message":"this provider takes no webhooks"}'
        return pb.HandleWebhookResponse(http_status=404, body=body, content_type="application/json")

    def describe(self) -> pb.DescribeResponse:
        """Name, version and capabilities."""
        return pb.DescribeResponse(
            name=self.name,
            version=self.version,
            description=self.description,
            capabilities=self.capabilities,
            simulation=self.simulation,
        )
