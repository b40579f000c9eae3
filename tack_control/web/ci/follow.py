"""Following one workflow's log for a subscriber: from its provider's Logs stream, resumed across provider restarts.

A workflow not yet handed to its provider is waited for; one tack failed
itself gets the same synthetic log as ``/logs`` shows. A provider's Logs
stream replays the run's log from its start, so when the stream breaks
(the provider was killed, restarted, or unreachable for a while) it is opened
again and the lines already delivered are skipped: the viewer gets the rest of
the log exactly once. Past the resume window, or when the provider says it has
no such log, a note saying so ends the workflow's log, marked incomplete.

Provider messages are encoded through :class:`LogFrames`, so every viewer of
the same lines shares one encoding of each message.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from tack_common import backoff
from tack_common.loglines import synthetic_log
from tack_common.pb import provider_pb2 as pb
from tack_control import metrics
from tack_control.engine.providers import ProviderClient
from tack_control.web.ci.logcbor import CborEncoding, note_messages
from tack_control.web.logframes import LogFrames
from tack_control.web.sender import Framed, frame_binaries


log = logging.getLogger(__name__)

QUEUED_POLL_S = 0.25
# Codes that say the log will not come however often it is asked for; any other failure is retried.
_FINAL = frozenset(
    {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED}
)

Put = Callable[[Framed], Awaitable[None]]


@dataclass(frozen=True)
class Target:
    """A workflow whose log is followed."""

    id: int
    knot: str
    rkey: str
    name: str


class Incomplete(Exception):
    """The workflow's log could not be delivered to its end; the message says why."""


class Follower:
    """Follows workflows' logs from their providers, for any number of subscribers."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        providers: dict[str, ProviderClient],
        frames: LogFrames,
        connect_timeout: float,
        resume_window: float,
    ) -> None:
        self.conn = conn
        self.providers = providers
        self.frames = frames
        self.connect_timeout = connect_timeout
        self.resume_window = resume_window

    async def follow(self, target: Target, put: Put) -> None:
        """Deliver ``target``'s whole log through ``put``; returns at its end, Incomplete when it could not be.

        On Incomplete, a note in the workflow's log has already told the viewer why.
        """
        try:
            await self._follow(target, put)
        except Incomplete as exc:
            metrics.CI_LOG_FOLLOWS.labels("incomplete").inc()
            log.warning(
                "workflow log incomplete",
                extra={"knot": target.knot, "rkey": target.rkey, "workflow": target.name, "reason": str(exc)},
            )
            await put(
                frame_binaries(note_messages(target.name, f"tack could not deliver the whole log: {exc}"))
            )
            raise

    async def _follow(self, target: Target, put: Put) -> None:
        provider_name, error = await self._accepted(target)
        encoding = CborEncoding(target.name)
        if provider_name is None:
            metrics.CI_LOG_FOLLOWS.labels("synthetic").inc()
            await put(encoding(synthetic_log("tack", error or "the workflow failed before it started")))
            return
        provider = self.providers.get(provider_name)
        if provider is None:
            raise Incomplete(f"provider {provider_name!r} is not configured")
        delivered = attempt = 0
        deadline = time.monotonic() + self.resume_window
        key = pb.WorkflowKey(knot=target.knot, pipeline_rkey=target.rkey, workflow=target.name)
        while True:
            call = provider.logs_serialized(pb.LogsRequest(key=key), wait_for_ready=True)
            skip = delivered
            try:
                wait = min(self.connect_timeout, max(0.0, deadline - time.monotonic()))
                await asyncio.wait_for(call.initial_metadata(), wait)
                async for message in call:
                    attempt, deadline = 0, time.monotonic() + self.resume_window
                    if skip:
                        lines = pb.LogsResponse.FromString(message).lines
                        if skip >= len(lines):
                            skip -= len(lines)
                            continue
                        framed, skip = encoding(lines[skip:]), 0
                    else:
                        framed = self.frames.get(message, encoding)
                    await put(framed)
                    delivered += framed.frames
                metrics.CI_LOG_FOLLOWS.labels("complete").inc()
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _FINAL:
                    raise Incomplete(
                        f"provider {provider_name!r}: {exc.code().name}: {(exc.details() or '')[:200]}"
                    ) from None
                reason = f"{exc.code().name}: {(exc.details() or '')[:200]}"
            except TimeoutError:
                reason = f"no answer within {self.connect_timeout:g}s"
            except DecodeError as exc:
                raise Incomplete(f"provider {provider_name!r} sent a malformed Logs message") from exc
            finally:
                call.cancel()
            if time.monotonic() >= deadline:
                raise Incomplete(
                    f"provider {provider_name!r} unreachable for {self.resume_window:g}s ({reason})"
                )
            attempt += 1
            metrics.CI_LOG_FOLLOWS.labels("resumed").inc()
            log.info(
                "provider log stream broke; resuming",
                extra={
                    "provider": provider_name,
                    "workflow": target.name,
                    "lines": delivered,
                    "reason": reason,
                },
            )
            await asyncio.sleep(
                min(backoff.delay(attempt, base=0.2, cap=5.0), max(0.0, deadline - time.monotonic()))
            )

    async def _accepted(self, target: Target) -> tuple[str | None, str]:
        """Wait while the workflow waits for its provider; (provider, "") once it has one, (None, reason) if tack failed it."""
        while True:
            row = self.conn.execute(
                "SELECT provider, dispatch, error FROM workflows WHERE id=?", (target.id,)
            ).fetchone()
            if row is None:
                raise Incomplete("the workflow is no longer known to this spindle")
            provider, dispatch, error = row
            if dispatch == "failed":
                return None, str(error)
            if dispatch != "queued":
                return str(provider), ""
            await asyncio.sleep(QUEUED_POLL_S)
