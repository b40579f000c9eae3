"""The fake builds.sr.ht's jobs and the rules they move by (docs/sourcehut-api.md §3, §4, §6, §9), free of I/O.

Tests drive jobs through ``Store`` methods; a move builds.sr.ht cannot make raises ``StateError`` (a bug in
the test), while an API request it refuses raises ``ApiError`` carrying builds.sr.ht's message.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import yaml


JOB_STATUSES = ("PENDING", "QUEUED", "RUNNING", "SUCCESS", "FAILED", "TIMEOUT", "CANCELLED")
TASK_STATUSES = ("PENDING", "RUNNING", "SUCCESS", "FAILED", "SKIPPED")
VISIBILITIES = ("PUBLIC", "UNLISTED", "PRIVATE")
TERMINAL = frozenset({"SUCCESS", "FAILED", "TIMEOUT", "CANCELLED"})
MANIFEST_MAX = 16384
NOTE_MAX = 4096
DEFAULT_RUNNER = "runner1.fake.sr.ht"

_TASK_NAME = re.compile(r"^[a-z0-9_-]+$")


class StateError(Exception):
    """The test asked for a move builds.sr.ht never makes."""


class ApiError(Exception):
    """builds.sr.ht refuses the request; ``str(self)`` is its error message."""


def timestamp(moment: datetime) -> str:
    """The ``Time`` scalar: ``%Y-%m-%dT%H:%M:%SZ`` in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Trigger:
    """A manifest trigger (§8, §9)."""

    action: str
    condition: str
    url: str | None = None


@dataclass
class Manifest:
    """What builds.sr.ht reads from a manifest: the parts the fake acts on."""

    image: str
    task_names: list[str]
    secrets: list[str]
    oauth: str
    triggers: list[Trigger]
    data: dict[str, Any]


def _go_type(value: Any) -> str:
    return {bool: "!!bool", int: "!!int", float: "!!float", str: "!!str", list: "!!seq", dict: "!!map"}.get(
        type(value), "!!null"
    )


def _unmarshal_error(what: Any, into: str) -> ApiError:
    return ApiError(f"yaml: unmarshal errors:\n  cannot unmarshal {_go_type(what)} into {into}")


def load_manifest(text: str) -> Manifest:
    """Parse and check a manifest as builds.sr.ht's ``LoadManifest`` does; ``ApiError`` with its message."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ApiError(f"yaml: {where}{problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _unmarshal_error(data, "graph.Manifest")
    image = data.get("image")
    if image is not None and not isinstance(image, str):
        raise _unmarshal_error(image, "string")
    if not image:
        raise ApiError("image is required")
    secrets = data.get("secrets") or []
    if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
        raise _unmarshal_error(secrets, "[]string")
    for secret in secrets:
        try:
            uuid.UUID(secret)
        except ValueError:
            if len(secret) <= 3 or len(secret) >= 512:
                raise ApiError(f"invalid UUID length: {len(secret)}") from None
    artifacts = data.get("artifacts") or []
    if not isinstance(artifacts, list):
        raise _unmarshal_error(artifacts, "[]string")
    seen: set[Any] = set()
    for artifact in artifacts:
        if artifact in seen:
            raise ApiError(f"duplicate artifact {artifact}")
        seen.add(artifact)
    tasks = data.get("tasks") or []
    if not isinstance(tasks, list):
        raise _unmarshal_error(tasks, "[]map[string]string")
    shell = data.get("shell", False)
    if not tasks and shell is not True:
        raise ApiError("list of tasks is required")
    names: list[str] = []
    for task in tasks:
        if not isinstance(task, dict):
            raise _unmarshal_error(task, "map[string]string")
        if len(task) != 1:
            raise ApiError('task schema is {"name": "value"} (or \'taskname: script...\' as YAML)')
        ((name, script),) = task.items()
        name = str(name)
        if not isinstance(script, str):
            raise _unmarshal_error(script, "string")
        if name in names:
            raise ApiError(f"duplicate task {name}")
        if not _TASK_NAME.match(name):
            raise ApiError(f"invalid task name '{name}'")
        names.append(name)
    triggers: list[Trigger] = []
    raw_triggers = data.get("triggers") or []
    if not isinstance(raw_triggers, list):
        raise _unmarshal_error(raw_triggers, "[]graph.Trigger")
    for raw in raw_triggers:
        if not isinstance(raw, dict):
            raise _unmarshal_error(raw, "graph.Trigger")
        action = str(raw.get("action", ""))
        trigger = Trigger(action, str(raw.get("condition", "")), raw.get("url"))
        if action == "email":
            if raw.get("to") is None and raw.get("cc") is None:
                raise ApiError("email trigger requires 'to' or 'cc'")
        elif action == "webhook":
            if trigger.url is None:
                raise ApiError("webhook trigger requires 'url'")
        else:
            raise ApiError(f"unknown trigger type '{action}'")
        triggers.append(trigger)
    oauth = data.get("oauth") or ""
    return Manifest(image, names, list(secrets), str(oauth), triggers, data)


@dataclass
class Task:
    id: int
    name: str
    created: datetime
    updated: datetime
    status: str = "PENDING"
    log: bytearray = field(default_factory=bytearray)
    log_exists: bool = False


@dataclass
class Job:
    id: int
    owner: str
    manifest: str
    parsed: Manifest
    note: str | None
    raw_tags: str
    secrets: bool
    visibility: str
    created: datetime
    updated: datetime
    tasks: list[Task]
    status: str = "PENDING"
    runner: str | None = None
    setup_log: bytearray = field(default_factory=bytearray)
    cancelling: bool = False
    """A cancel was taken while the runner has not killed the job yet (``Store.cancel_lag``)."""

    @property
    def tags(self) -> list[str]:
        """Read back as builds.sr.ht does: the stored ``/``-joined string split on ``/``, so no tags
        read back as ``[""]`` (§3)."""
        return self.raw_tags.split("/")

    @property
    def image(self) -> str:
        return self.parsed.image

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise StateError(f"job {self.id} has no task {name!r}")

    def running_task(self) -> Task | None:
        return next((t for t in self.tasks if t.status == "RUNNING"), None)


@dataclass
class Submission:
    """One ``submit`` call as it arrived, whether or not it created a job."""

    token_owner: str
    manifest: str
    tags: list[str] | None
    note: str | None
    secrets: bool | None
    execute: bool | None
    visibility: str | None
    job_id: int | None = None
    error: str | None = None


class Store:
    """Every job of every user, with the moves builds.sr.ht's API and runners make."""

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self.now = now or (lambda: datetime.now(UTC))
        self.jobs: dict[int, Job] = {}
        self._next_job = 1
        self._next_task = 1
        self.on_finish: list[Callable[[Job], None]] = []
        self.cancel_lag = False
        """As builds.sr.ht does: ``cancel`` answers CANCELLED but the job reads RUNNING until the runner
        kills it (``runner_cancels``, or the next ``autorun`` tick). False: the runner kills it at once."""

    # -- the API's side -----------------------------------------------------------------------------

    def submit(
        self,
        owner: str,
        manifest: str,
        *,
        tags: list[str] | None,
        note: str | None,
        secrets: bool | None,
        execute: bool | None,
        visibility: str | None,
        may_read_secrets: bool,
    ) -> Job:
        """``submit`` (§3): validate, store the job and its tasks as PENDING."""
        parsed = load_manifest(manifest)
        if secrets is None:
            use_secrets = (bool(parsed.secrets) or bool(parsed.oauth)) and may_read_secrets
        else:
            use_secrets = secrets
        if use_secrets and not may_read_secrets:
            raise ApiError("Access denied for invalid auth method")
        if len(manifest) > MANIFEST_MAX:
            raise ApiError(f"pq: value too long for type character varying({MANIFEST_MAX})")
        if note is not None and len(note) > NOTE_MAX:
            raise ApiError(f"pq: value too long for type character varying({NOTE_MAX})")
        now = self.now()
        tasks = []
        for name in parsed.task_names:
            tasks.append(Task(self._next_task, name, now, now))
            self._next_task += 1
        job = Job(
            id=self._next_job,
            owner=owner,
            manifest=manifest,
            parsed=parsed,
            note=note,
            raw_tags="/".join(tags or []),
            secrets=use_secrets,
            visibility=visibility or "UNLISTED",
            created=now,
            updated=now,
            tasks=tasks,
        )
        self._next_job += 1
        self.jobs[job.id] = job
        return job

    def start(self, owner: str, job_id: int) -> Job:
        """``start`` (§4): queue a job that was submitted with ``execute: false``."""
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner or job.status != "PENDING" or job.runner is not None:
            raise ApiError("Found no pending jobs with this ID on your account")
        self._set(job, "QUEUED")
        return job

    def cancel(self, owner: str, job_id: int) -> Job:
        """``cancel`` (§6): only a running job of the caller's; the runner kills it at once, or with
        ``cancel_lag`` later (the answer says CANCELLED either way, as the resolver sets it on its copy)."""
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner or job.status != "RUNNING":
            raise ApiError("Found no running jobs for your account with this ID")
        if not self.cancel_lag:
            self._end(job, "CANCELLED")
            return job
        job.cancelling = True
        return replace(job, status="CANCELLED")

    def runner_cancels(self, job_id: int) -> Job:
        """The runner kills a job whose cancel the API took (``cancel_lag``): CANCELLED."""
        job = self.get(job_id)
        if not job.cancelling or job.finished:
            raise StateError(f"job {job_id} has no cancel pending")
        self._end(job, "CANCELLED")
        return job

    def visible(self, owner: str, job_id: int) -> Job | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def owned(self, owner: str) -> list[Job]:
        """The owner's jobs, newest first (§5)."""
        return sorted((j for j in self.jobs.values() if j.owner == owner), key=lambda j: -j.id)

    # -- the runner's side (the test drives these) ----------------------------------------------------

    def get(self, job_id: int) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise StateError(f"no job {job_id}")
        return job

    def pick_up(self, job_id: int, runner: str = DEFAULT_RUNNER) -> Job:
        """A runner takes the job: RUNNING, ``runner`` set, the setup log exists."""
        job = self.get(job_id)
        if job.status not in ("PENDING", "QUEUED"):
            raise StateError(f"job {job_id} is {job.status}; only a pending or queued job is picked up")
        job.runner = runner
        self._set(job, "RUNNING")
        return job

    def append_setup_log(self, job_id: int, text: str | bytes) -> None:
        job = self.get(job_id)
        if job.runner is None:
            raise StateError(f"job {job_id} has no runner yet, so no setup log")
        job.setup_log += text.encode() if isinstance(text, str) else text

    def start_task(self, job_id: int, name: str) -> Task:
        """The next task starts: every earlier task has succeeded; its log file now exists."""
        job = self.get(job_id)
        if job.status != "RUNNING":
            raise StateError(f"job {job_id} is {job.status}, not RUNNING")
        for task in job.tasks:
            if task.name == name:
                break
            if task.status != "SUCCESS":
                raise StateError(f"task {task.name} of job {job_id} is {task.status}; tasks run in order")
        task = job.task(name)
        if task.status != "PENDING":
            raise StateError(f"task {name} of job {job_id} is {task.status}, not PENDING")
        task.status = "RUNNING"
        task.log_exists = True
        task.updated = self.now()
        job.updated = task.updated
        return task

    def append_task_log(self, job_id: int, name: str, text: str | bytes) -> None:
        task = self.get(job_id).task(name)
        if not task.log_exists:
            raise StateError(f"task {name} of job {job_id} has not started, so it has no log")
        task.log += text.encode() if isinstance(text, str) else text

    def finish_task(self, job_id: int, name: str, *, ok: bool, settle: bool = True) -> Task:
        """A running task ends. A failure fails the job (later tasks stay PENDING); the last success,
        with ``settle``, makes the job SUCCESS."""
        job = self.get(job_id)
        task = job.task(name)
        if task.status != "RUNNING" or job.status != "RUNNING":
            raise StateError(f"task {name} of job {job_id} is {task.status} (job {job.status}), not RUNNING")
        task.status = "SUCCESS" if ok else "FAILED"
        task.updated = self.now()
        if not ok:
            self._end(job, "FAILED")
        elif settle and task is job.tasks[-1]:
            self._end(job, "SUCCESS")
        return task

    def complete_build(self, job_id: int, name: str) -> Job:
        """The running task called ``complete-build``: it succeeds, later tasks are SKIPPED, the job SUCCESS."""
        job = self.get(job_id)
        task = self.finish_task(job_id, name, ok=True, settle=False)
        for later in job.tasks[job.tasks.index(task) + 1 :]:
            later.status = "SKIPPED"
            later.updated = task.updated
        if not job.finished:
            self._end(job, "SUCCESS")
        return job

    def succeed(self, job_id: int) -> Job:
        """End a running job whose tasks have all succeeded (after ``finish_task(settle=False)``)."""
        job = self.get(job_id)
        if job.status != "RUNNING" or any(t.status != "SUCCESS" for t in job.tasks):
            raise StateError(
                f"job {job_id} cannot succeed: {job.status}, tasks {[t.status for t in job.tasks]}"
            )
        self._end(job, "SUCCESS")
        return job

    def fail_setup(self, job_id: int) -> Job:
        """Setup (boot, packages, sources) failed: FAILED with every task still PENDING."""
        job = self.get(job_id)
        if job.status != "RUNNING" or any(t.status != "PENDING" for t in job.tasks):
            raise StateError(f"job {job_id} is past setup or not running")
        self._end(job, "FAILED")
        return job

    def time_out(self, job_id: int) -> Job:
        """The runner's deadline passed: TIMEOUT; the running task (if any) FAILED."""
        job = self.get(job_id)
        if job.status != "RUNNING":
            raise StateError(f"job {job_id} is {job.status}; only a running job times out")
        self._end(job, "TIMEOUT")
        return job

    def _end(self, job: Job, status: str) -> None:
        running = job.running_task()
        if running is not None:
            running.status = "FAILED"
            running.updated = self.now()
        self._set(job, status)
        for hook in self.on_finish:
            hook(job)

    def _set(self, job: Job, status: str) -> None:
        job.status = status
        job.updated = self.now()
