"""A run's log, read from the cluster: one Tangled step per step container, in pipeline order (docs/tekton-api.md §7).

Each step is shown once it has started, its container log followed while it runs, then closed with how it
ended when it did not pass. A task that was skipped is one line with the reason; a task that never ran
is one line saying so. A pod that is gone when its log is read (Tekton deletes the pods of a cancelled
run; pruners delete old ones) is one line saying so, not an error. The stream ends once the run has
finished and every task was shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from tack_common import loglines
from tack_common.pb import provider_pb2 as pb
from tack_provider_tekton import metrics
from tack_provider_tekton.kube import Kube, KubeError, Unreachable
from tack_provider_tekton.states import succeeded_condition
from tack_provider_tekton.steps import StepRef, TaskEntry, outcome_line, plan, split_timestamp
from tack_provider_tekton.watchwire import Lines, LineTooLong


log = logging.getLogger(__name__)

MAX_LOG_LINE = 1 << 20


def _finished(pipelinerun: Mapping[str, Any]) -> bool:
    condition = succeeded_condition(pipelinerun) or {}
    return condition.get("status") in ("True", "False")


class LogView:
    """One viewer's stream of one PipelineRun's steps."""

    def __init__(self, kube: Kube, name: str, interval: float, run_over: Callable[[], bool]) -> None:
        self.kube = kube
        self.name = name
        self.interval = interval
        self.run_over = run_over
        self.steps = loglines.StepLog()

    async def _read(self) -> tuple[Mapping[str, Any], list[TaskEntry] | None] | None:
        """The PipelineRun and its tasks now; None when it cannot be read right now."""
        try:
            pipelinerun = await self.kube.get_pipeline_run(self.name)
            taskruns = await self.kube.list_task_runs(self.name)
        except Unreachable as exc:
            log.warning(
                "log: the PipelineRun could not be read", extra={"pipelinerun": self.name, "error": str(exc)}
            )
            return None
        return pipelinerun, plan(pipelinerun, taskruns)

    async def stream(self) -> AsyncIterator[Sequence[pb.LogLine]]:
        """Every task's steps as they start, until the run has finished and all were shown."""
        shown: set[tuple[str, str]] = set()
        done_tasks: set[str] = set()
        while True:
            try:
                snapshot = await self._read()
            except KubeError as exc:
                if exc.status == 404:
                    yield loglines.synthetic_log("tekton", f"the PipelineRun {self.name} no longer exists")
                    return
                raise
            if snapshot is None:
                await asyncio.sleep(self.interval)
                continue
            pipelinerun, tasks = snapshot
            finished = _finished(pipelinerun)
            if tasks is None or (finished and not tasks):
                if finished:
                    condition = succeeded_condition(pipelinerun) or {}
                    yield loglines.synthetic_log(
                        "tekton", f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
                    )
                    return
                await asyncio.sleep(self.interval)
                continue
            progressed = False
            for entry in tasks:
                if entry.task in done_tasks:
                    continue
                chunk = await self._next_of(entry, shown, done_tasks, finished)
                if chunk is None:
                    if entry.task in done_tasks:
                        continue
                    break  # this task has nothing to show yet; tasks are shown in order
                progressed = True
                async for lines in chunk:
                    yield lines
                break
            if len(done_tasks) == len(tasks) and finished:
                if self.steps.open_step is not None:
                    yield self.steps.end()
                return
            if not progressed:
                await asyncio.sleep(self.interval)

    async def _next_of(
        self, entry: TaskEntry, shown: set[tuple[str, str]], done_tasks: set[str], finished: bool
    ) -> AsyncIterator[Sequence[pb.LogLine]] | None:
        """The next thing to show of ``entry`` (None: nothing yet)."""
        if entry.skipped is not None:
            done_tasks.add(entry.task)
            return self._one_line(entry.task, f"skipped: {entry.skipped}")
        if entry.taskrun is None:
            if finished:
                done_tasks.add(entry.task)
                return self._one_line(entry.task, "not run")
            return None
        pending = [s for s in entry.steps if (s.task, s.step) not in shown]
        if not pending:
            if entry.finished or finished:
                done_tasks.add(entry.task)
                if not entry.steps:
                    condition = succeeded_condition(entry.taskrun) or {}
                    reason = condition.get("message") or condition.get("reason") or "no steps ran"
                    return self._one_line(entry.task, f"not run: {reason}")
            return None
        step = pending[0]
        if not step.started and not (entry.finished or finished):
            return None
        shown.add((step.task, step.step))
        return self._step(step, entry.finished or finished)

    async def _one_line(self, title: str, text: str) -> AsyncIterator[Sequence[pb.LogLine]]:
        yield [*self.steps.start(title, kind=loglines.USER), self.steps.data(text), *self.steps.end()]

    async def _current(self, step: StepRef) -> StepRef | None:
        """The step as its TaskRun reports it now."""
        snapshot = await self._read()
        if snapshot is None or snapshot[1] is None:
            return None
        for entry in snapshot[1]:
            for candidate in entry.steps:
                if (candidate.task, candidate.step) == (step.task, step.step):
                    return candidate
        return None

    async def _step(self, step: StepRef, over: bool) -> AsyncIterator[Sequence[pb.LogLine]]:
        yield self.steps.start(step.title, f"container {step.container}", loglines.USER)
        seen = 0
        metrics.LOG_STREAMS.inc()
        try:
            while True:
                ended = step.terminated is not None or over
                try:
                    count = 0
                    lines = Lines(MAX_LOG_LINE)
                    reader = self.kube.pod_log(step.pod, step.container, follow=not ended)
                    async with contextlib.aclosing(reader) as chunks:
                        async for chunk in chunks:
                            fresh: list[pb.LogLine] = []
                            for raw in [*lines.feed(chunk)]:
                                count += 1
                                if count > seen:
                                    seen = count
                                    ns, text = split_timestamp(raw)
                                    fresh.append(self.steps.data(text, ns=ns))
                            if fresh:
                                yield fresh
                    tail = lines.flush()
                    if tail and ended and count + 1 > seen:
                        seen = count + 1
                        ns, text = split_timestamp(tail)
                        yield [self.steps.data(text, ns=ns)]
                except KubeError as exc:
                    if exc.status == 404:
                        yield [
                            self.steps.data(
                                f"the pod {step.pod} is gone (deleted after the run, or pruned);"
                                " this step's log is no longer available",
                                loglines.STDERR,
                            )
                        ]
                        break
                    if exc.status != 400 or ended:
                        yield [
                            self.steps.data(f"log unavailable: {exc.message or exc.reason}", loglines.STDERR)
                        ]
                        break
                except (Unreachable, LineTooLong) as exc:
                    log.warning("log: read failed; retrying", extra={"pod": step.pod, "error": str(exc)})
                if ended:
                    break
                await asyncio.sleep(self.interval if seen == 0 else 0)
                current = await self._current(step)
                over = over or self.run_over()
                if current is not None:
                    step = current
                elif over:
                    break
        finally:
            metrics.LOG_STREAMS.dec()
        closing: list[pb.LogLine] = []
        outcome = outcome_line(step)
        if outcome is not None:
            closing.append(self.steps.data(outcome, loglines.STDERR))
        closing.extend(self.steps.end())
        yield closing
