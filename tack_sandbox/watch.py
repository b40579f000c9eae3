"""What ``make run`` prints while the sandbox runs: each pipeline and status as the appview receives them
from ``/events``, and each finished workflow's log, read as the current appview reads it
(``sh.tangled.ci.subscribePipelineLogs``, DAG-CBOR frames) or, for a 2025-protocol sandbox, from ``/logs``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import libipld

from tack_common.status import TERMINAL_NAMES


PIPELINE_NSID = "sh.tangled.pipeline"
STATUS_NSID = "sh.tangled.pipeline.status"


def describe_pipeline(record: dict[str, Any]) -> str:
    """One line about a new pipeline: what triggered it and which workflows it runs."""
    meta = record.get("triggerMetadata") or {}
    kind = meta.get("kind", "?")
    names = ", ".join(w.get("name", "?") for w in record.get("workflows") or []) or "no workflows"
    if kind == "push":
        push = meta.get("push") or {}
        what = f"push to {push.get('ref', '?')} at {str(push.get('newSha', ''))[:10]}"
    elif kind == "pull_request":
        pull = meta.get("pullRequest") or {}
        what = (
            f"pull request {pull.get('action', '')} {pull.get('sourceBranch', '?')} → "
            f"{pull.get('targetBranch', '?')} at {str(pull.get('sourceSha', ''))[:10]}"
        ).replace("  ", " ")
    elif kind == "manual":
        what = f"manual run at {str((meta.get('manual') or {}).get('sha', ''))[:10]}"
    else:
        what = str(kind)
    return f"{what}: {names}"


class Watcher:
    """Follows the spindle at ``spindle`` (``host:port``) and prints through ``say`` (finished workflows' logs too
    when ``logs``: read from the CI API when ``current``, else from ``/logs`` on ``knot``)."""

    def __init__(
        self, spindle: str, knot: str, *, current: bool, logs: bool, say: Callable[[str], None]
    ) -> None:
        self.spindle = spindle
        self.knot = knot
        self.current = current
        self.logs = logs
        self.say = say

    async def follow(self) -> None:
        """Print every event from the start of ``/events``, reconnecting by cursor; runs until cancelled."""
        cursor = 1
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    url = f"ws://{self.spindle}/events?cursor={cursor}"
                    async with session.ws_connect(url, heartbeat=None) as ws:
                        async for msg in ws:
                            if msg.type == aiohttp.WSMsgType.TEXT:
                                envelope = json.loads(msg.data)
                                cursor = max(cursor, int(envelope.get("created", 0)))
                                await self._show(session, envelope)
                except (aiohttp.ClientError, OSError):
                    pass
                await asyncio.sleep(1)

    async def _show(self, session: aiohttp.ClientSession, envelope: dict[str, Any]) -> None:
        record = envelope["event"]
        if envelope.get("nsid") == PIPELINE_NSID:
            self.say(f"{'':20}  {envelope['rkey']}  new pipeline: {describe_pipeline(record)}")
            return
        if envelope.get("nsid") != STATUS_NSID:
            return
        rkey = record["pipeline"].rsplit("/", 1)[-1]
        extra = f"  ({record['error']}, exit code {record['exitCode']})" if "error" in record else ""
        self.say(f"{record['createdAt']}  {rkey}  {record['workflow']:<10} {record['status']}{extra}")
        if self.logs and record["status"] in TERMINAL_NAMES:
            with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
                if self.current:
                    await self._ci_log(session, rkey, record["workflow"])
                else:
                    await self._legacy_log(session, rkey, record["workflow"])

    async def _ci_log(self, session: aiohttp.ClientSession, rkey: str, workflow: str) -> None:
        query = urlencode({"pipeline": rkey, "workflows": workflow})
        url = f"ws://{self.spindle}/xrpc/sh.tangled.ci.subscribePipelineLogs?{query}"
        async with session.ws_connect(url) as ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                header, body = libipld.decode_dag_cbor_multi(msg.data)
                if header.get("op") == -1:
                    self.say(f"    ! {body.get('error')}: {body.get('message')}")
                elif header.get("t") == "#control" and body.get("status") == "start":
                    self._step(workflow, body.get("content", ""), body.get("command", ""))
                elif header.get("t") == "#data":
                    self.say(f"    │ {str(body.get('content', '')).rstrip()}")

    async def _legacy_log(self, session: aiohttp.ClientSession, rkey: str, workflow: str) -> None:
        async with session.ws_connect(f"ws://{self.spindle}/logs/{self.knot}/{rkey}/{workflow}") as ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                line = json.loads(msg.data)
                if line["kind"] == "control" and line.get("step_status") == "start":
                    self._step(workflow, line["content"], line.get("step_command", ""))
                elif line["kind"] == "data":
                    self.say(f"    │ {line['content']}")

    def _step(self, workflow: str, name: str, command: str) -> None:
        self.say(f"    ── {workflow} · {name}: $ {command}")
