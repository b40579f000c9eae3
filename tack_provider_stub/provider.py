"""The stub provider: executes scripted runs, keeps their logs in SQLite, survives restarts."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tack_common import loglines, sqlite, status as st
from tack_common.notify import Notifier
from tack_common.pb import provider_pb2 as pb
from tack_common.sqlite import Schema
from tack_provider_kit import logbatch
from tack_provider_kit.provider import InvalidArgument, Provider
from tack_provider_kit.servicer import MAX_LINES_PER_MESSAGE
from tack_provider_kit.store import JSONDict, ProviderStore, Run
from tack_provider_stub import script as scripts
from tack_provider_stub.script import Script


log = logging.getLogger(__name__)

LOG_V1 = """
CREATE TABLE IF NOT EXISTS stub_log (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    line BLOB NOT NULL,
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;
"""
SCHEMA = Schema("stub", (LOG_V1,))
TICK_SECONDS = 0.05
WRITE_CHUNK = 5000
READ_CHUNK = MAX_LINES_PER_MESSAGE  # one Logs message per read


class _Cancelled(Exception):
    """The run was cancelled by request while executing."""


class StubProvider(Provider):
    """Runs each workflow as its ``tack.stub`` script says. A simulation: nothing is built."""

    name = "stub"
    description = "Simulated CI: runs workflows as scripted by tack.stub; builds nothing."
    simulation = True
    capabilities = pb.Capabilities(cancel=True, live_logs=True, webhooks=False)

    def __init__(self, store: ProviderStore) -> None:
        super().__init__(store)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._cancel: dict[int, asyncio.Event] = {}
        self._log_changed: dict[int, Notifier] = {}

    # Lifecycle

    async def startup(self) -> None:
        """Resume every run a previous process left unfinished."""
        for run in self.store.active():
            log.info("resuming run", extra={"run": str(run.key), "status": st.name(run.status)})
            self._launch(run.id)

    async def shutdown(self) -> None:
        """Stop executing; unfinished runs stay as they are and resume at the next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Provider contract

    def prepare(self, request: pb.SpawnRequest, workflow: pb.Workflow) -> JSONDict:
        """Validate the workflow's ``tack.stub`` script."""
        try:
            config = json.loads(workflow.config_json or "{}")
        except ValueError as exc:
            raise InvalidArgument(f"config_json: not JSON ({exc})") from None
        script = scripts.parse(config)
        return {"script": script.to_json(), "step": 0, "emitted": 0, "started": False, "log_size": 0}

    async def start(self, run: Run) -> None:
        """Execute the run in the background."""
        self._launch(run.id)

    async def cancel(self, run: Run) -> st.Status:
        """Ask the run to stop and wait (briefly) until it has."""
        event = self._cancel.get(run.id)
        task = self._tasks.get(run.id)
        if event is None or task is None:
            self.store.set_status(run.id, st.CANCELLED)
        else:
            event.set()
            await asyncio.wait({task}, timeout=5)
        current = self.store.get_by_id(run.id)
        return st.CANCELLED if current is None else current.status

    async def log(self, run: Run) -> AsyncIterator[Sequence[pb.LogLine] | pb.LogsResponse]:
        """Stored lines from the start, then new ones until the run is finished."""
        idx = 0
        while True:
            rows = self.store.conn.execute(
                "SELECT line FROM stub_log WHERE run_id=? AND idx>=? ORDER BY idx LIMIT ?",
                (run.id, idx, READ_CHUNK),
            ).fetchall()
            if rows:
                idx += len(rows)
                yield logbatch.logs_response(row[0] for row in rows)
                continue
            current = self.store.get_by_id(run.id)
            if current is None or current.terminal:
                return
            await self._notifier(run.id).wait(15)

    # Execution

    def _notifier(self, run_id: int) -> Notifier:
        return self._log_changed.setdefault(run_id, Notifier())

    def _launch(self, run_id: int) -> None:
        if run_id in self._tasks:
            return
        self._cancel[run_id] = asyncio.Event()
        # Supervised: a run whose execution fails (a full disk) is restarted and resumes from its stored state.
        task = self.supervisor.spawn(
            "stub_run", functools.partial(self._execute, run_id), name=f"stub_run:{run_id}", forever=False
        )
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._forget(run_id))

    def _forget(self, run_id: int) -> None:
        self._tasks.pop(run_id, None)
        self._cancel.pop(run_id, None)
        notifier = self._log_changed.pop(run_id, None)
        if notifier is not None:
            notifier.notify()

    def _write(self, run_id: int, lines: Sequence[pb.LogLine], state: JSONDict) -> None:
        """Append log lines and the run's progress in one transaction, then wake followers."""
        count = state["log_size"]
        state["log_size"] = count + len(lines)
        with sqlite.Transaction(self.store.conn) as conn:
            conn.executemany(
                "INSERT INTO stub_log (run_id, idx, line) VALUES (?, ?, ?)",
                [(run_id, count + i, line.SerializeToString()) for i, line in enumerate(lines)],
            )
            conn.execute("UPDATE runs SET data=? WHERE id=?", (json.dumps(state), run_id))
        self._notifier(run_id).notify()

    async def _pause(self, run_id: int, seconds: float) -> None:
        """Sleep, or raise _Cancelled as soon as a cancel is requested."""
        event = self._cancel[run_id]
        if event.is_set():
            raise _Cancelled
        if seconds > 0:
            try:
                await asyncio.wait_for(event.wait(), seconds)
            except TimeoutError:
                return
            raise _Cancelled

    async def _execute(self, run_id: int) -> None:
        run = self.store.get_by_id(run_id)
        if run is None or run.terminal:
            return
        state: dict[str, Any] = dict(run.data)
        script = scripts.from_json(state["script"])
        step_log = loglines.StepLog(next_step_id=state["step"])
        try:
            if run.status == st.PENDING:
                await self._pause(run_id, script.queue_seconds)
                self.store.set_status(run_id, st.RUNNING)
            while state["step"] < len(script.steps):
                await self._run_step(run_id, script, state, step_log)
                if state["step"] == len(script.steps) - 1 and script.outcome != "success":
                    break
                self._close_step(run_id, state, step_log)
            self._finish(run_id, script, state, step_log)
        except _Cancelled:
            self._end_cancelled(run_id, script, state, step_log)

    async def _run_step(
        self, run_id: int, script: Script, state: dict[str, Any], step_log: loglines.StepLog
    ) -> None:
        step = script.steps[state["step"]]
        stream = loglines.STDERR if step.stream == "stderr" else loglines.STDOUT
        opening: list[pb.LogLine] = []
        if not state["started"]:
            step_log.next_step_id = state["step"]
            opening = step_log.start(step.name, step.command)
            state["started"], state["emitted"] = True, 0
        else:
            step_log.open_step = (state["step"], step.name, loglines.USER)
            opening = [step_log.data("[stub] provider restarted; resuming this step", loglines.STDERR)]
        self._write(run_id, opening, state)
        remaining = step.line_count - state["emitted"]
        duration = step.duration * (remaining / step.line_count) if step.line_count else step.duration
        began, first = time.monotonic(), state["emitted"]
        while True:
            elapsed = time.monotonic() - began
            due = remaining if duration == 0 else min(remaining, math.floor(remaining * elapsed / duration))
            while first + due > state["emitted"]:
                upto = min(first + due, state["emitted"] + WRITE_CHUNK)
                lines = [step_log.data(step.line(i), stream) for i in range(state["emitted"], upto)]
                state["emitted"] = upto
                self._write(run_id, lines, state)
                await asyncio.sleep(0)
            if state["emitted"] >= step.line_count and elapsed >= duration:
                break
            await self._pause(run_id, min(TICK_SECONDS, max(0.0, duration - elapsed)))

    def _close_step(
        self, run_id: int, state: dict[str, Any], step_log: loglines.StepLog, extra: Sequence[pb.LogLine] = ()
    ) -> None:
        state["step"], state["started"], state["emitted"] = state["step"] + 1, False, 0
        self._write(run_id, [*extra, *step_log.end()], state)

    def _finish(self, run_id: int, script: Script, state: dict[str, Any], step_log: loglines.StepLog) -> None:
        outcome = script.outcome
        if step_log.open_step is not None:
            note = {
                "failed": f"exit status {script.exit_code}",
                "timeout": "[stub] step timed out",
                "cancelled": "[stub] cancelled",
            }.get(outcome)
            extra = [step_log.data(note, loglines.STDERR)] if note else []
            self._close_step(run_id, state, step_log, extra)
        if outcome == "failed":
            self.store.set_status(run_id, st.FAILED, script.failure_message(), script.exit_code)
        else:
            self.store.set_status(run_id, st.from_name(outcome))

    def _end_cancelled(
        self, run_id: int, script: Script, state: dict[str, Any], step_log: loglines.StepLog
    ) -> None:
        if step_log.open_step is not None:
            self._close_step(
                run_id, state, step_log, [step_log.data("[stub] cancelled by request", loglines.STDERR)]
            )
        self.store.set_status(run_id, st.CANCELLED, "cancelled by request")
