"""Every piece of state the control plane's aiohttp application holds, under one AppKey each.

Handlers read their state only through these keys, so what a route depends on
is visible in one place and no module reaches into another's keys.
"""

from __future__ import annotations

import sqlite3
import weakref
from typing import TYPE_CHECKING

from aiohttp import web

from tack_control.config import Settings
from tack_control.engine.eventlog import EventLog
from tack_control.engine.providers import ProviderClient
from tack_control.web.logframes import LogFrames


if TYPE_CHECKING:
    from tack_control.core import Core


SETTINGS = web.AppKey("settings", Settings)
CORE: web.AppKey[Core] = web.AppKey("core")
EVENTS = web.AppKey("events", EventLog)
DB = web.AppKey("db", sqlite3.Connection)
PROVIDERS = web.AppKey("providers", dict[str, ProviderClient])
LOG_FRAMES = web.AppKey("log_frames", LogFrames)
OWNER = web.AppKey("owner", str)
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
