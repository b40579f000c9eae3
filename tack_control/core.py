"""The control plane's composition root: every long-lived part, wired together, and its background loops."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path

from tack_common.sqlite import BackgroundCheckpoints
from tack_common.storage import WriteProbe
from tack_common.supervise import Supervisor
from tack_control import metrics
from tack_control.config import Settings
from tack_control.engine import retention
from tack_control.engine.cancel import Cancellations
from tack_control.engine.db import open_db
from tack_control.engine.dispatch import Dispatcher
from tack_control.engine.eventlog import EventLog
from tack_control.engine.pipelines import Pipelines
from tack_control.engine.providers import ProviderClient, StatusWatcher
from tack_control.engine.statuses import StatusBook
from tack_control.engine.webhooks import WebhookForwarder, WebhookQueue
from tack_control.identity.pds import PdsReader
from tack_control.identity.replay import ReplayStore
from tack_control.identity.resolver import DidResolver
from tack_control.identity.serviceauth import ServiceAuth
from tack_control.ingest.backfill import Limits, Reconciler
from tack_control.ingest.gitcli import GitFetchError
from tack_control.ingest.gitfetch import WorkflowFetcher, ls_remote_refs
from tack_control.ingest.intake import Intake
from tack_control.ingest.jetstream import JetstreamIngest
from tack_control.ingest.knotapi import KnotApi
from tack_control.ingest.knots import KnotConsumers
from tack_control.ingest.minting import LoadFailed, Minter
from tack_control.ingest.pulls import PullIntake, PullWorker
from tack_control.ingest.pushes import PushWorker
from tack_control.ingest.recovery import Recovery
from tack_control.ingest.registry import Registry
from tack_control.ingest.verify import Verifier, fork_knots, knot_from_document
from tack_control.netguard import Fetcher


log = logging.getLogger(__name__)

TRANSIENT_GIT_FAILURES = frozenset({"unreachable", "timeout", "stalled", "http_error", "dns"})


class Core:
    """Every long-lived part of the control plane, wired together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.supervisor = Supervisor(give_up_after=settings.task_give_up_s)
        self.conn = open_db(settings.db_path)
        self.checkpoints = BackgroundCheckpoints(self.conn, settings.db_path)
        self.storage = WriteProbe(self.conn)
        self.events = EventLog(self.conn)
        self.book = StatusBook(self.conn, self.events)
        self.registry = Registry(self.conn, settings.hostname, settings.owner_did)
        self.providers = {
            name: ProviderClient(name, addr, settings.provider_tls_ca)
            for name, addr in settings.providers.items()
        }
        self.cancels = Cancellations(self.book, self.providers, timeout_s=settings.spawn_timeout_s)
        self.dispatcher = Dispatcher(
            self.book,
            self.providers,
            spawn_timeout_s=settings.spawn_timeout_s,
            give_up_s=settings.dispatch_give_up_s,
            reconcile_after_s=settings.reconcile_after_s,
            cancels=self.cancels.wake,
        )
        self.watchers = [StatusWatcher(p, self.book) for p in self.providers.values()]
        self.pipelines = Pipelines(self.book, self.events)
        self.fetcher = Fetcher(settings.dev)
        self.knot_api = KnotApi(self.fetcher.get_json, settings.dev)
        self.resolver = DidResolver(
            self.fetcher, settings.plc_url, dev=settings.dev, ttl_s=settings.did_cache_ttl_s
        )
        self.service_auth = ServiceAuth(self.resolver, ReplayStore(self.conn), settings.hostname)
        self.pds = PdsReader(self.resolver, self.fetcher)
        self.fork_knot = fork_knots(knot_from_document(self.resolver), self.knot_api)
        self.git = WorkflowFetcher(Path(settings.git_cache), dev=settings.dev)
        self.minter = Minter(self.knot_api, list(self.providers), settings.default_provider)
        self.push_worker = PushWorker(
            self.registry, self.book, self.pipelines, self.minter, self.load_workflows, self.dispatcher.poke
        )
        self.pull_worker = PullWorker(
            self.registry,
            self.book,
            self.pipelines,
            self.minter,
            self.load_workflows,
            self.resolver,
            self.pds,
            self.fetcher,
            self.dispatcher.poke,
        )
        self.recovery = Recovery(
            self.registry,
            self.book,
            self.list_refs,
            self.push_worker.poke,
            settings.reconcile_refs_interval_s,
        )
        self.intake = Intake(
            self.registry,
            self.book,
            self.pipelines,
            list(self.providers),
            settings.default_provider,
            self.dispatcher.poke,
            on_push=self.push_worker.poke,
        )
        self.knots = KnotConsumers(
            self.conn,
            settings.dev,
            self.intake.handle_frame,
            settings.knot_rewind_s,
            self.supervisor,
            on_connected=self.recovery.knot_connected,
        )
        self.jetstream = JetstreamIngest(
            settings.jetstream_url,
            self.registry,
            self.book,
            self.registrations_changed,
            settings.jetstream_rewind_s,
            on_members_changed=lambda: self.reconciler.poke(),
            pulls=PullIntake(self.registry),
            on_pull=self.pull_worker.poke,
        )
        self.verifier = Verifier(
            self.registry, self.book, self.knot_api, self.follow_knots, knot_from_document(self.resolver)
        )
        self.reconciler = Reconciler(
            self.registry,
            self.book,
            self.pds,
            self.registrations_changed,
            settings.reconcile_records_interval_s,
            Limits(fetch_timeout_s=settings.reconcile_records_timeout_s),
        )
        self.webhooks = WebhookQueue(self.conn, settings.webhook_queue_bytes)
        self.forwarders = [WebhookForwarder(p, self.webhooks) for p in self.providers.values()]

    async def load_workflows(self, knot: str, repo_did: str, sha: str) -> list[tuple[str, str]]:
        """The workflow files at ``sha`` from the knot (LoadFailed says why not, and whether to try again)."""
        try:
            fetched = await self.git.fetch(knot, repo_did, sha)
        except GitFetchError as exc:
            raise LoadFailed(
                f"{exc} ({exc.reason})", transient=exc.reason in TRANSIENT_GIT_FAILURES
            ) from None
        return [(f.name, f.text) for f in fetched.files]

    async def list_refs(self, knot: str, repo_did: str) -> dict[str, str]:
        """The branches and tags the knot serves now (GitFetchError becomes OSError for the recovery loop)."""
        try:
            return (await ls_remote_refs(knot, repo_did, dev=self.settings.dev)).refs
        except GitFetchError as exc:
            raise OSError(f"{exc} ({exc.reason})") from None

    def follow_knots(self) -> None:
        """Follow exactly the knots of the repositories registered now."""
        self.knots.sync(self.registry.knots())

    def registrations_changed(self) -> None:
        """A repository record changed: follow its knot, or verify it first."""
        self.follow_knots()
        self.verifier.poke()

    def start(self) -> None:
        """Start every background task, supervised (a task that fails is logged, counted and restarted)."""
        spawn = self.supervisor.spawn
        spawn("statuses", self.release_held_statuses)
        spawn("dispatcher", self.dispatcher.run)
        spawn("provider_health", self.check_providers)
        spawn("prune", self.prune)
        spawn("storage", self.storage.run)
        spawn("jetstream", self.jetstream.run)
        spawn("verifier", self.verifier.run)
        spawn("reconciler", self.reconciler.run)
        spawn("cancels", self.cancels.run)
        spawn("push_worker", self.push_worker.run)
        spawn("pull_worker", self.pull_worker.run)
        spawn("recovery", self.recovery.run)
        for watcher in self.watchers:
            spawn("watch_status", watcher.run, name=f"watch_status:{watcher.provider.name}")
        for forwarder in self.forwarders:
            spawn("webhook_forwarder", forwarder.run, name=f"webhook_forwarder:{forwarder.provider.name}")
        self.follow_knots()

    async def release_held_statuses(self) -> None:
        """Publish statuses held for their createdAt second, as their seconds begin.

        A status is only held for a second that has not begun, so the queue is
        read once per second boundary, not again for every status held
        meanwhile (with thousands held, that rereading was most of the work).
        """
        while True:
            due = self.book.release_due()
            metrics.STATUSES_HELD.set(self.book.held())
            if due is None:
                await self.book.held_changed.wait(5.0)
                due = math.floor(time.time()) + 1
            await asyncio.sleep(max(0.0, due - time.time()))

    async def check_providers(self) -> None:
        """Keep each provider's health fresh for /readyz and the metrics."""
        while True:
            await asyncio.gather(*(p.check() for p in self.providers.values()))
            await asyncio.sleep(5)

    async def prune(self) -> None:
        """Drop events and finished workflows older than the retention window, hourly."""
        while True:
            cutoff = time.time_ns() - int(self.settings.retention_days * 86400 * 1e9)
            pruned = retention.prune(self.book, self.events, cutoff)
            if any(vars(pruned).values()):
                log.info("pruned", extra=vars(pruned))
            await asyncio.sleep(3600)

    async def close(self) -> None:
        """Stop every task and close channels and the database."""
        await self.supervisor.close()
        await self.knots.close()
        await self.fetcher.close()
        await self.dispatcher.close()
        for provider in self.providers.values():
            await provider.close()
        self.checkpoints.close()
        self.conn.close()
