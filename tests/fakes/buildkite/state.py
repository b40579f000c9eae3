"""The fake's world, free of I/O: pipelines, builds, jobs and the rules that move their states.

Every mutation returns the webhook events it caused, in the natural order of
docs/buildkite-api.md §10.5, each carrying a snapshot of the build (and job) taken
when the event happened. Rules (§5, §10.4):

- the first job to run makes the build ``running``;
- a hard job failure while other jobs are unfinished makes it ``failing``;
- when every job is terminal the build is ``passed`` (all passed or soft-failed) or ``failed``;
- a cancel of a running build goes ``canceling`` until its running jobs stop, then ``canceled``;
- a ``waiter`` job passes once everything before it passed; otherwise it and
  the jobs behind it end ``waiting_failed``.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tests.fakes.buildkite.config import (
    GENESIS,
    JobTemplate,
    JsonObject,
    PipelineSpec,
    User,
)
from tests.fakes.buildkite.logs import TIMEOUT_LINE, JobLog, exit_error_line, preamble


TERMINAL_JOB_STATES = frozenset(
    {
        "passed",
        "failed",
        "canceled",
        "timed_out",
        "skipped",
        "broken",
        "expired",
        "waiting_failed",
        "blocked_failed",
        "unblocked_failed",
    }
)
NOT_STARTED_JOB_STATES = frozenset({"pending", "waiting", "scheduled", "assigned", "accepted"})
RUNNING_JOB_STATES = frozenset({"running", "canceling", "timing_out"})
TERMINAL_BUILD_STATES = frozenset({"passed", "failed", "canceled", "skipped", "not_run"})
CANCELABLE_BUILD_STATES = frozenset({"scheduled", "running", "failing"})
ADVANCE_TARGETS = (
    "assigned",
    "accepted",
    "running",
    "passed",
    "failed",
    "timing_out",
    "timed_out",
    "canceling",
    "canceled",
)
_OK_JOB_STATES = frozenset({"passed", "skipped", "broken"})


class ApiError(Exception):
    """A Buildkite REST error: HTTP status and JSON body (always with ``message``)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: JsonObject = {"message": message, **extra}


class StateError(ValueError):
    """A request to drive the fake that its state rules do not allow."""


@dataclass
class Job:
    """A job of a build; ``log`` holds its raw bytes (never rendered into JSON)."""

    id: str
    type: str
    name: str | None
    step_key: str | None
    command: str | None
    agent_query_rules: tuple[str, ...]
    soft_fail: bool
    state: str
    created_at: float
    scheduled_at: float | None = None
    runnable_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    soft_failed: bool = False
    exit_status: int | None = None
    signal: str | None = None
    signal_reason: str | None = None
    agent: JsonObject | None = None
    retried: bool = False
    retried_in_job_id: str | None = None
    retries_count: int | None = None
    retry_source: JsonObject | None = None
    retry_type: str | None = None
    log: JobLog = field(default_factory=JobLog, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """Whether the job is in a final state."""
        return self.state in TERMINAL_JOB_STATES

    @property
    def ok(self) -> bool:
        """Terminal and not a reason for the build to fail."""
        return self.state in _OK_JOB_STATES or (self.state == "failed" and self.soft_failed)

    @property
    def hard_failed(self) -> bool:
        """A failure that fails the build (not soft-failed)."""
        return self.state in ("timed_out", "expired") or (self.state == "failed" and not self.soft_failed)


@dataclass
class Build:
    """A build and its jobs, including retried attempts (``retried=True``, hidden by default)."""

    id: str
    number: int
    pipeline: str
    seq: int
    creator: User
    state: str
    message: str | None
    commit: str
    branch: str
    env: JsonObject
    author: Any
    meta_data: dict[str, str]
    pull_request: JsonObject | None
    created_at: float
    scheduled_at: float
    jobs: list[Job]
    request_body: JsonObject | None = None
    request_raw: bytes | None = field(default=None, repr=False)
    source: str = "api"
    blocked: bool = False
    cancel_reason: str | None = None
    started_at: float | None = None
    failing_at: float | None = None
    finished_at: float | None = None
    rebuilt_from: Build | None = field(default=None, repr=False)
    clean_checkout: bool = False

    @property
    def terminal(self) -> bool:
        """Whether the build is in a final state (which a job retry can still undo)."""
        return self.state in TERMINAL_BUILD_STATES

    def current_jobs(self) -> list[Job]:
        """The jobs the API shows by default: the latest attempt of each step."""
        return [job for job in self.jobs if not job.retried]

    def job(self, ref: str) -> Job:
        """A job by id, or the latest attempt of the step with this key."""
        for job in self.jobs:
            if job.id == ref:
                return job
        for job in self.current_jobs():
            if job.step_key == ref:
                return job
        raise KeyError(ref)

    def snapshot(self) -> Build:
        """A copy whose scalar fields and jobs do not change when the build does."""
        return replace(self, jobs=[replace(job) for job in self.jobs], meta_data=dict(self.meta_data))


@dataclass(frozen=True)
class Event:
    """A webhook-worthy change: the event name with the build (and job) as they were then."""

    name: str
    build: Build
    job: Job | None = None


@dataclass
class Pipeline:
    """A pipeline of the org and its build numbering."""

    slug: str
    spec: PipelineSpec
    templates: list[JobTemplate]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: float = GENESIS
    next_number: int = 1


def branch_matches(pattern_list: str, branch: str) -> bool:
    """Buildkite's branch filter: space-separated globs; ``!glob`` excludes; no positive glob means all."""
    patterns = pattern_list.split()
    positives = [p for p in patterns if not p.startswith("!")]
    if any(fnmatch.fnmatchcase(branch, p[1:]) for p in patterns if p.startswith("!")):
        return False
    return not positives or any(fnmatch.fnmatchcase(branch, p) for p in positives)


def _meta_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _validate_create(body: Any) -> list[JsonObject]:
    errors: list[JsonObject] = []
    if not isinstance(body, dict):
        return [{"field": "body", "code": "invalid"}]
    for name in ("commit", "branch"):
        value = body.get(name)
        if value is None or value == "":
            errors.append({"field": name, "code": "missing"})
        elif not isinstance(value, str):
            errors.append({"field": name, "code": "invalid"})
    kinds: dict[str, tuple[type, ...]] = {
        "message": (str,),
        "env": (dict,),
        "meta_data": (dict,),
        "author": (dict, str),
        "ignore_pipeline_branch_filters": (bool,),
        "clean_checkout": (bool,),
        "pull_request_base_branch": (str,),
        "pull_request_repository": (str,),
        "pull_request_labels": (list,),
    }
    for name, types in kinds.items():
        if body.get(name) is not None and not isinstance(body[name], types):
            errors.append({"field": name, "code": "invalid"})
    pr_id = body.get("pull_request_id")
    if pr_id is not None and (isinstance(pr_id, bool) or not isinstance(pr_id, int)):
        errors.append({"field": "pull_request_id", "code": "invalid"})
    return errors


class World:
    """Org, pipelines and builds, mutated only through methods that return the events they cause."""

    def __init__(self, org: str, pipelines: Mapping[str, PipelineSpec], clock: Callable[[], float]) -> None:
        self.org = org
        self.clock = clock
        self.pipelines = {slug: Pipeline(slug, spec, spec.templates()) for slug, spec in pipelines.items()}
        for pipeline in self.pipelines.values():
            pipeline.next_number = pipeline.spec.first_build_number
        self.builds: list[Build] = []
        self._by_id: dict[str, Build] = {}

    def now_ms(self) -> int:
        """The clock in Unix milliseconds (the unit of log timestamps)."""
        return int(self.clock() * 1000)

    # lookup

    def find(self, pipeline: str, number: int) -> Build | None:
        """The build with this number in this pipeline."""
        for build in self.builds:
            if build.pipeline == pipeline and build.number == number:
                return build
        return None

    def resolve(self, ref: Build | str | int) -> Build:
        """A build by object, UUID, number (when unique) or ``"pipeline/number"``."""
        if isinstance(ref, Build):
            return ref
        text = str(ref)
        if text in self._by_id:
            return self._by_id[text]
        slug, _, number = text.rpartition("/")
        if number.isdigit():
            matches = [b for b in self.builds if b.number == int(number) and slug in ("", b.pipeline)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise KeyError(f"build number {number} is ambiguous; use 'pipeline/number' or the id")
        raise KeyError(f"no build {text!r}")

    # creation

    def create_build(self, slug: str, creator: User, body: Any) -> tuple[Build, list[Event]]:
        """``POST .../builds``: validate like Buildkite, then schedule a build from the pipeline's steps."""
        pipeline = self.pipelines[slug]
        errors = _validate_create(body)
        if errors:
            raise ApiError(422, "Validation Failed", errors=errors)
        assert isinstance(body, dict)
        branch_filter = pipeline.spec.branch_filter
        if (
            branch_filter is not None
            and not body.get("ignore_pipeline_branch_filters")
            and not branch_matches(branch_filter, body["branch"])
        ):
            raise ApiError(422, "Build does not match the pipeline's filter condition")
        pull_request: JsonObject | None = None
        if body.get("pull_request_id") is not None:
            pull_request = {
                "id": str(body["pull_request_id"]),
                "base": body.get("pull_request_base_branch"),
                "repository": body.get("pull_request_repository"),
            }
            if body.get("pull_request_labels") is not None:
                pull_request["labels"] = list(body["pull_request_labels"])
        author = body.get("author")
        if author is None:
            author = {"name": creator.name, "email": creator.email}
        build = self._new_build(
            pipeline,
            creator,
            commit=body["commit"],
            branch=body["branch"],
            message=body.get("message") or None,
            env=dict(body.get("env") or {}),
            author=author,
            meta_data={str(k): _meta_value(v) for k, v in (body.get("meta_data") or {}).items()},
            pull_request=pull_request,
        )
        build.request_body = body
        build.clean_checkout = bool(body.get("clean_checkout"))
        return build, self._schedule(build)

    def rebuild(self, build: Build, creator: User) -> tuple[Build, list[Event]]:
        """``PUT .../rebuild``: a new build with the same commit, branch, message, env and pull request."""
        if not build.terminal:
            raise ApiError(422, "This build can't be rebuilt because it hasn't finished yet")
        new = self._new_build(
            self.pipelines[build.pipeline],
            creator,
            commit=build.commit,
            branch=build.branch,
            message=build.message,
            env=dict(build.env),
            author=build.author,
            meta_data={},
            pull_request=dict(build.pull_request) if build.pull_request else None,
        )
        new.rebuilt_from = build
        return new, self._schedule(new)

    def _new_build(self, pipeline: Pipeline, creator: User, **fields: Any) -> Build:
        now = self.clock()
        build = Build(
            id=str(uuid.uuid4()),
            number=pipeline.next_number,
            pipeline=pipeline.slug,
            seq=len(self.builds),
            creator=creator,
            state="scheduled",
            created_at=now,
            scheduled_at=now,
            jobs=[],
            **fields,
        )
        pipeline.next_number += 1
        self.builds.append(build)
        self._by_id[build.id] = build
        return build

    def _schedule(self, build: Build) -> list[Event]:
        events = [self._event("build.scheduled", build)]
        events += self._add_jobs(build, self.pipelines[build.pipeline].templates)
        self._settle(build, events)
        return events

    def add_jobs(self, build: Build, templates: Iterable[JobTemplate]) -> list[Event]:
        """Jobs that appear while the build runs, as after ``buildkite-agent pipeline upload``."""
        if build.terminal or build.state == "canceling":
            raise StateError(f"build {build.number} is {build.state}; no jobs can be added")
        events = self._add_jobs(build, templates)
        self._settle(build, events)
        return events

    def _add_jobs(self, build: Build, templates: Iterable[JobTemplate]) -> list[Event]:
        events: list[Event] = []
        now = self.clock()
        gated = any(job.type == "waiter" and job.state != "passed" for job in build.current_jobs())
        for template in templates:
            job = Job(
                id=str(uuid.uuid4()),
                type=template.type,
                name=template.name,
                step_key=template.step_key,
                command=template.command,
                agent_query_rules=template.agent_query_rules,
                soft_fail=template.soft_fail,
                state="waiting" if gated or template.type == "waiter" else "scheduled",
                created_at=now,
            )
            build.jobs.append(job)
            if job.state == "scheduled":
                job.scheduled_at = job.runnable_at = now
                events.append(self._event("job.scheduled", build, job))
            gated = gated or template.type == "waiter"
        return events

    # driving jobs

    def advance(
        self,
        build: Build,
        job: Job,
        to: str | None = None,
        *,
        exit_status: int | None = None,
        log_append: str | None = None,
    ) -> list[Event]:
        """Move ``job`` to ``to`` (passing through ``running`` when needed) and append output.

        ``log_append`` is raw command output (a missing final newline leaves the
        line open); it is written before the job finishes.
        """
        if to is not None and to not in ADVANCE_TARGETS:
            raise StateError(f"cannot advance a job to {to!r}; choose one of {', '.join(ADVANCE_TARGETS)}")
        if job.type != "script":
            raise StateError(f"{job.type} jobs move on their own")
        events: list[Event] = []
        if to is None:
            if job.started_at is None:
                raise StateError(f"job {job.step_key or job.id} has not started; it has no log yet")
        elif to in ("assigned", "accepted"):
            self._require(job, ("scheduled", "assigned"), to)
            job.state = to
        elif to == "canceled" and job.state in NOT_STARTED_JOB_STATES:
            self._append(job, log_append)
            self._finish(build, job, "canceled", None, events)
        elif to == "canceled":
            self._require(job, RUNNING_JOB_STATES, to)
            self._append(job, log_append)
            self._finish(build, job, "canceled", -1, events, signal="SIGTERM", reason="cancel")
        else:
            if job.state in NOT_STARTED_JOB_STATES:
                self._start(build, job, events)
            if to == "running":
                self._require(job, ("running",), to)
            elif to in ("canceling", "timing_out"):
                self._require(job, ("running",), to)
                job.state = to
            elif to in ("passed", "failed"):
                self._require(job, ("running",), to)
                default = 0 if to == "passed" else 1
                self._append(job, log_append)
                self._finish(build, job, to, default if exit_status is None else exit_status, events)
            elif to == "timed_out":
                self._require(job, ("running", "timing_out"), to)
                self._append(job, log_append)
                job.log.agent_line(TIMEOUT_LINE, self.now_ms())
                self._finish(build, job, "timed_out", -1, events, signal="SIGTERM")
        if to in (None, "running", "assigned", "accepted", "canceling", "timing_out"):
            self._append(job, log_append)
        return events

    def _require(self, job: Job, states: Iterable[str], to: str) -> None:
        if job.state not in states:
            raise StateError(f"job {job.step_key or job.id} is {job.state}; it cannot go to {to}")

    def _append(self, job: Job, text: str | None) -> None:
        if text:
            if job.started_at is None:
                raise StateError(f"job {job.step_key or job.id} has not started; it has no log yet")
            job.log.write_output(text, self.now_ms())

    def _start(self, build: Build, job: Job, events: list[Event]) -> None:
        if build.state == "canceling" or build.terminal:
            raise StateError(f"build {build.number} is {build.state}; its jobs cannot start")
        self._require(job, ("scheduled", "assigned", "accepted"), "running")
        now = self.clock()
        job.state = "running"
        job.started_at = now
        job.agent = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, build.id)), "name": "fake-agent-1"}
        for line in preamble(job.command):
            job.log.agent_line(line, self.now_ms())
        if "buildkite:git:commit" not in build.meta_data:
            resolved = build.commit if len(build.commit) == 40 else secrets.token_hex(20)
            build.meta_data["buildkite:git:commit"] = resolved
        if build.message is None:
            build.message = "Fake commit message"
        events.append(self._event("job.started", build, job))
        self._settle(build, events)

    def _finish(
        self,
        build: Build,
        job: Job,
        state: str,
        exit_status: int | None,
        events: list[Event],
        *,
        signal: str | None = None,
        reason: str | None = None,
    ) -> None:
        now_ms = self.now_ms()
        if job.started_at is not None:
            job.log.end_line(now_ms)
            if state == "failed" and exit_status:
                job.log.agent_line(exit_error_line(exit_status), now_ms)
        job.state = state
        job.exit_status = exit_status
        job.signal = signal
        job.signal_reason = reason
        job.soft_failed = state == "failed" and job.soft_fail
        job.finished_at = self.clock()
        if job.scheduled_at is not None:
            events.append(self._event("job.finished", build, job))
        self._settle(build, events)

    # cancel and retry

    def cancel(self, build: Build) -> list[Event]:
        """``PUT .../cancel``: unstarted jobs are canceled at once, running ones go ``canceling``."""
        if build.state == "canceling":
            raise ApiError(422, "This build can't be canceled because it's already being canceled")
        if build.state not in CANCELABLE_BUILD_STATES:
            raise ApiError(422, "This build can't be canceled because it has already finished")
        events: list[Event] = []
        build.state = "canceling"
        for job in build.current_jobs():
            if job.state in ("running", "timing_out"):
                job.state = "canceling"
            elif not job.terminal:
                self._finish(build, job, "canceled", None, events)
        self._settle(build, events)
        return events

    def finish_cancel(self, build: Build) -> list[Event]:
        """The agent stopped every ``canceling`` job: they end ``canceled`` with SIGTERM, exit -1."""
        events: list[Event] = []
        for job in build.current_jobs():
            if job.state == "canceling":
                self._finish(build, job, "canceled", -1, events, signal="SIGTERM", reason="cancel")
        self._settle(build, events)
        return events

    def retry_job(self, build: Build, job: Job) -> tuple[Job, list[Event]]:
        """``PUT .../jobs/{id}/retry``: a new attempt of a failed or timed-out job; the build runs again."""
        if job.retried:
            raise ApiError(422, "This job has already been retried")
        if job.type != "script" or job.state not in ("failed", "timed_out"):
            raise ApiError(422, "Only failed or timed out jobs can be retried")
        now = self.clock()
        new = replace(
            job,
            id=str(uuid.uuid4()),
            state="scheduled",
            created_at=now,
            scheduled_at=now,
            runnable_at=now,
            started_at=None,
            finished_at=None,
            soft_failed=False,
            exit_status=None,
            signal=None,
            signal_reason=None,
            agent=None,
            retries_count=(job.retries_count or 0) + 1,
            retry_source={"job_id": job.id, "retry_type": "manual"},
            retry_type="manual",
            log=JobLog(),
        )
        job.retried = True
        job.retried_in_job_id = new.id
        build.jobs.insert(build.jobs.index(job) + 1, new)
        for other in build.current_jobs():
            if other.state == "waiting_failed":
                other.state = "waiting"
                other.finished_at = None
        events: list[Event] = []
        if build.terminal or build.state == "failing":
            build.state = "running"
            build.failing_at = None
            build.finished_at = None
            events.append(self._event("build.running", build))
        events.append(self._event("job.scheduled", build, new))
        self._settle(build, events)
        return new, events

    # the build follows its jobs

    def _settle(self, build: Build, events: list[Event]) -> None:
        while build.state != "canceling" and self._open_waiter(build, events):
            pass
        jobs = build.current_jobs()
        now = self.clock()
        all_done = all(job.terminal for job in jobs)
        if build.state == "canceling":
            if all_done:
                build.state = "canceled"
                build.finished_at = now
                events.append(self._event("build.finished", build))
            return
        if build.terminal:
            return
        if build.state == "scheduled" and any(job.started_at is not None for job in jobs):
            build.state = "running"
            build.started_at = now
            events.append(self._event("build.running", build))
        if all_done:
            build.state = "passed" if all(job.ok for job in jobs) else "failed"
            build.finished_at = now
            events.append(self._event("build.finished", build))
        elif build.state == "running" and any(job.hard_failed for job in jobs):
            build.state = "failing"
            build.failing_at = now
            events.append(self._event("build.failing", build))

    def _open_waiter(self, build: Build, events: list[Event]) -> bool:
        jobs = build.current_jobs()
        for index, waiter in enumerate(jobs):
            if waiter.type != "waiter" or waiter.state != "waiting":
                continue
            before = jobs[:index]
            if not all(job.terminal for job in before):
                return False
            now = self.clock()
            waiter.finished_at = now
            passed = all(job.ok for job in before)
            waiter.state = "passed" if passed else "waiting_failed"
            for job in jobs[index + 1 :]:
                if job.type == "waiter" and passed:
                    break
                if job.state == "waiting" and not passed:
                    job.state = "waiting_failed"
                    job.finished_at = now
                elif job.state == "waiting":
                    job.state = "scheduled"
                    job.scheduled_at = job.runnable_at = now
                    events.append(self._event("job.scheduled", build, job))
            return True
        return False

    def _event(self, name: str, build: Build, job: Job | None = None) -> Event:
        return Event(name, build.snapshot(), replace(job) if job is not None else None)


def job_state_counts(jobs: Sequence[Job]) -> JsonObject:
    """``job_state_counts`` of GET build: the total and a count per state."""
    states: dict[str, int] = {}
    for job in jobs:
        states[job.state] = states.get(job.state, 0) + 1
    return {"total": len(jobs), "states": states}
