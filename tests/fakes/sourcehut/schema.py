"""The subset of builds.sr.ht's schema the fake serves, with resolvers over ``state.Store``
(docs/sourcehut-api.md §2 to §7; field types and ``@access`` scopes as in ``api/graph/schema.graphqls``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.fakes.sourcehut.execute import FieldDef, FieldError, Schema, Type
from tests.fakes.sourcehut.state import (
    JOB_STATUSES,
    TASK_STATUSES,
    VISIBILITIES,
    ApiError,
    Job,
    Store,
    Submission,
    Task,
    timestamp,
)


PAGE_SIZE = 25
_CURSOR_KEY = b"fake builds.sr.ht cursor key"


@dataclass(frozen=True)
class User:
    """An account on the fake instance."""

    username: str
    id: int = 1
    email: str = ""
    paid: bool = True

    @property
    def canonical_name(self) -> str:
        return f"~{self.username}"


@dataclass
class Caller:
    """Who is asking (from the bearer token) and what they may see: a resolver's context."""

    user: User
    grants: frozenset[str]
    store: Store
    origin: str
    build_timeout: str
    record: Callable[[Submission], None]
    users: dict[str, User] = field(default_factory=dict)


def may(caller: Caller, scope: str, kind: str) -> bool:
    """Whether the caller's grants allow ``scope``/``kind`` (RW includes RO)."""
    return f"{scope}:RW" in caller.grants or (kind == "RO" and f"{scope}:RO" in caller.grants)


def encode_cursor(next_id: int) -> str:
    body = json.dumps({"count": PAGE_SIZE, "next": str(next_id)}).encode()
    mac = hmac.new(_CURSOR_KEY, body, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + body).decode()


def decode_cursor(text: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(text.encode())
        mac, body = raw[:12], raw[12:]
        if not hmac.compare_digest(mac, hmac.new(_CURSOR_KEY, body, hashlib.sha256).digest()[:12]):
            raise ValueError("mac")
        return int(json.loads(body)["next"])
    except (ValueError, KeyError, TypeError):
        raise FieldError("Invalid cursor") from None


def _time(value: datetime | None) -> str | None:
    return None if value is None else timestamp(value)


def _page(caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
    jobs = caller.store.owned(caller.user.username)
    if args.get("cursor") is not None:
        start = decode_cursor(args["cursor"])
        jobs = [j for j in jobs if j.id <= start]
    page, rest = jobs[:PAGE_SIZE], jobs[PAGE_SIZE:]
    return {"results": page, "cursor": encode_cursor(rest[0].id) if rest else None}


def _submit(caller: Caller, _: Any, args: dict[str, Any]) -> Job:
    submission = Submission(
        token_owner=caller.user.username,
        manifest=args["manifest"],
        tags=args.get("tags"),
        note=args.get("note"),
        secrets=args.get("secrets"),
        execute=args.get("execute"),
        visibility=args.get("visibility"),
    )
    caller.record(submission)
    try:
        if not caller.user.paid:
            raise ApiError("A paid account is required to submit builds")
        job = caller.store.submit(
            caller.user.username,
            args["manifest"],
            tags=args.get("tags"),
            note=args.get("note"),
            secrets=args.get("secrets"),
            execute=args.get("execute"),
            visibility=args.get("visibility"),
            may_read_secrets=may(caller, "SECRETS", "RO"),
        )
    except ApiError as exc:
        submission.error = str(exc)
        raise FieldError(str(exc)) from None
    submission.job_id = job.id
    return job


def _mutate(
    action: Callable[[Store, str, int], Job], arg: str
) -> Callable[[Caller, Any, dict[str, Any]], Job]:
    def resolve(caller: Caller, _: Any, args: dict[str, Any]) -> Job:
        try:
            return action(caller.store, caller.user.username, args[arg])
        except ApiError as exc:
            raise FieldError(str(exc)) from None

    return resolve


def _log(kind: str) -> Callable[[Caller, Any, dict[str, Any]], dict[str, Any] | None]:
    """``Job.log``/``Task.log``: null without a runner; with ``last128KiB`` selected, also null while the
    runner has no such file (builds.sr.ht fetches the tail then and treats its 404 as "no log")."""

    def resolve(caller: Caller, obj: Any, args: dict[str, Any]) -> dict[str, Any] | None:
        if kind == "job":
            job: Job = obj
            if job.runner is None:
                return None
            return {"url": f"{caller.origin}/query/log/{job.id}/log", "data": bytes(job.setup_log)}
        task_job, task = obj
        if task_job.runner is None:
            return None
        if "last128KiB" in args["__selected"] and not task.log_exists:
            return None
        return {"url": f"{caller.origin}/query/log/{task_job.id}/{task.name}/log", "data": bytes(task.log)}

    return resolve


def _attr(name: str) -> Callable[[Caller, Any, dict[str, Any]], Any]:
    return lambda _c, obj, _a: obj[name] if isinstance(obj, dict) else getattr(obj, name)


def _task(fn: Callable[[Job, Task], Any]) -> Callable[[Caller, Any, dict[str, Any]], Any]:
    return lambda _c, obj, _a: fn(*obj)


def _user_obj(caller: Caller, username: str) -> User:
    return caller.users.get(username) or User(username)


def build_schema() -> Schema:
    """The schema subset with its resolvers."""
    f = FieldDef
    t = Type
    user_fields = {
        "id": f(t("Int!"), _attr("id")),
        "created": f(t("Time!"), lambda _c, _o, _a: "2026-01-01T00:00:00Z"),
        "updated": f(t("Time!"), lambda _c, _o, _a: "2026-01-01T00:00:00Z"),
        "canonicalName": f(t("String!"), _attr("canonical_name")),
        "username": f(t("String!"), _attr("username")),
        "email": f(t("String!"), _attr("email")),
        "url": f(t("String"), lambda _c, _o, _a: None),
        "location": f(t("String"), lambda _c, _o, _a: None),
        "bio": f(t("String"), lambda _c, _o, _a: None),
        "jobs": f(t("JobCursor!"), lambda c, _o, a: _page(c, a), {"cursor": t("Cursor")}, ("JOBS", "RO")),
    }
    types: dict[str, dict[str, FieldDef]] = {
        "Query": {
            "version": f(t("Version!"), lambda _c, _o, _a: {}),
            "me": f(t("User!"), lambda c, _o, _a: c.user, access=("PROFILE", "RO")),
            "jobs": f(t("JobCursor!"), lambda c, _o, a: _page(c, a), {"cursor": t("Cursor")}, ("JOBS", "RO")),
            "job": f(
                t("Job"),
                lambda c, _o, a: c.store.visible(c.user.username, a["id"]),
                {"id": t("Int!")},
                ("JOBS", "RO"),
            ),
        },
        "Mutation": {
            "submit": f(
                t("Job!"),
                _submit,
                {
                    "manifest": t("String!"),
                    "tags": t("[String!]"),
                    "note": t("String"),
                    "secrets": t("Boolean"),
                    "execute": t("Boolean"),
                    "visibility": t("Visibility"),
                },
                ("JOBS", "RW"),
            ),
            "start": f(t("Job"), _mutate(Store.start, "jobID"), {"jobID": t("Int!")}, ("JOBS", "RW")),
            "cancel": f(t("Job"), _mutate(Store.cancel, "jobId"), {"jobId": t("Int!")}, ("JOBS", "RW")),
        },
        "Version": {
            "major": f(t("Int!"), lambda _c, _o, _a: 0),
            "minor": f(t("Int!"), lambda _c, _o, _a: 0),
            "patch": f(t("Int!"), lambda _c, _o, _a: 0),
            "deprecationDate": f(t("Time"), lambda _c, _o, _a: None),
            "settings": f(t("Settings!"), lambda _c, _o, _a: {}),
        },
        "Settings": {
            "sshUser": f(t("String!"), lambda _c, _o, _a: "builds"),
            "buildTimeout": f(t("String!"), lambda c, _o, _a: c.build_timeout),
        },
        "User": user_fields,
        "JobCursor": {
            "results": f(t("[Job!]!"), _attr("results")),
            "cursor": f(t("Cursor"), _attr("cursor")),
        },
        "Job": {
            "id": f(t("Int!"), _attr("id")),
            "created": f(t("Time!"), lambda _c, o, _a: _time(o.created)),
            "updated": f(t("Time!"), lambda _c, o, _a: _time(o.updated)),
            "status": f(t("JobStatus!"), _attr("status")),
            "manifest": f(t("String!"), _attr("manifest")),
            "note": f(t("String"), _attr("note")),
            "tags": f(t("[String!]!"), _attr("tags")),
            "visibility": f(t("Visibility!"), _attr("visibility")),
            "image": f(t("String!"), _attr("image")),
            "runner": f(t("String"), _attr("runner")),
            "owner": f(t("User!"), lambda c, o, _a: _user_obj(c, o.owner), access=("PROFILE", "RO")),
            "group": f(t("JobGroup"), lambda _c, _o, _a: None),
            "tasks": f(t("[Task!]!"), lambda _c, o, _a: [(o, task) for task in o.tasks]),
            "artifacts": f(t("[Artifact!]!"), lambda _c, _o, _a: []),
            "log": f(t("Log"), _log("job"), access=("LOGS", "RO"), sees_selection=True),
            "secrets": f(
                t("[Secret!]"), lambda _c, o, _a: [] if o.secrets else None, access=("SECRETS", "RO")
            ),
        },
        "Task": {
            "id": f(t("Int!"), _task(lambda _j, task: task.id)),
            "created": f(t("Time!"), _task(lambda _j, task: _time(task.created))),
            "updated": f(t("Time!"), _task(lambda _j, task: _time(task.updated))),
            "name": f(t("String!"), _task(lambda _j, task: task.name)),
            "status": f(t("TaskStatus!"), _task(lambda _j, task: task.status)),
            "log": f(t("Log"), _log("task"), access=("LOGS", "RO"), sees_selection=True),
            "job": f(t("Job!"), _task(lambda job, _t: job)),
        },
        "Log": {
            "fullURL": f(t("String!"), _attr("url")),
            "last128KiB": f(t("String!"), lambda _c, o, _a: o["data"][-131072:].decode("utf-8", "replace")),
        },
        "JobGroup": {
            "id": f(t("Int!"), _attr("id")),
            "created": f(t("Time!"), _attr("created")),
            "note": f(t("String"), _attr("note")),
        },
        "Artifact": {
            "id": f(t("Int!"), _attr("id")),
            "created": f(t("Time!"), _attr("created")),
            "path": f(t("String!"), _attr("path")),
            "size": f(t("Int!"), _attr("size")),
            "url": f(t("String"), _attr("url")),
        },
        "Secret": {
            "id": f(t("Int!"), _attr("id")),
            "created": f(t("Time!"), _attr("created")),
            "uuid": f(t("String!"), _attr("uuid")),
            "name": f(t("String"), _attr("name")),
        },
    }
    enums = {"JobStatus": JOB_STATUSES, "TaskStatus": TASK_STATUSES, "Visibility": VISIBILITIES}
    return Schema(types, enums, may)
