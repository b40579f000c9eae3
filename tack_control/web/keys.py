"""Every piece of state the control plane's aiohttp application holds, under one AppKey each.

Handlers read their state only through these keys, so what a route depends on
is visible in one place and no module reaches into another's keys. The types
are imported for the type checker only, so any module may import this one.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from aiohttp import web


if TYPE_CHECKING:
    from tack_control.config import Settings
    from tack_control.core import Core
    from tack_control.engine.eventlog import EventLog
    from tack_control.engine.providers import ProviderClient
    from tack_control.engine.webhooks import WebhookQueue
    from tack_control.identity.pds import PdsReader
    from tack_control.identity.serviceauth import ServiceAuth
    from tack_control.ingest.minting import LoadWorkflows
    from tack_control.ingest.registry import Registry
    from tack_control.ingest.verify import ForkKnot
    from tack_control.web.logframes import LogFrames
    from tack_control.web.sender import Conversation


SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
CORE: web.AppKey[Core] = web.AppKey("core")
EVENTS: web.AppKey[EventLog] = web.AppKey("events")
DB: web.AppKey[sqlite3.Connection] = web.AppKey("db")
PROVIDERS: web.AppKey[dict[str, ProviderClient]] = web.AppKey("providers")
WEBHOOK_QUEUE: web.AppKey[WebhookQueue] = web.AppKey("webhook_queue")
LOG_FRAMES: web.AppKey[LogFrames] = web.AppKey("log_frames")
OWNER: web.AppKey[str] = web.AppKey("owner")
SERVICE_AUTH: web.AppKey[ServiceAuth] = web.AppKey("service_auth")
PDS: web.AppKey[PdsReader] = web.AppKey("pds")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
SOCKETS: web.AppKey[set[Conversation]] = web.AppKey("sockets")
LOAD_WORKFLOWS: web.AppKey[LoadWorkflows | None] = web.AppKey("load_workflows")
"""Reads a commit's ``.tangled/workflows`` (knot, repo DID, sha); None until the git loader is wired."""
FORK_KNOT: web.AppKey[ForkKnot | None] = web.AppKey("fork_knot")
"""The vetted knot of a repository not registered here (a fork's), from its DID document and that knot."""
