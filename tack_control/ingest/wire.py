"""Parsing what Tangled sends: Jetstream commits, knot envelopes and their records. Free of I/O.

Every parser raises :class:`BadRecord` with a message naming the field at
fault; callers count and skip such input, never crash on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


MAX_FRAME_BYTES = 4 << 20
MAX_WORKFLOWS = 256
MAX_RAW_BYTES = 256 << 10
MAX_FIELD = 1024

_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]{1,2000}$")
_RKEY = re.compile(r"^[a-zA-Z0-9._:~-]{1,512}$")
_HOST = re.compile(r"^[a-zA-Z0-9.-]{1,253}(:[0-9]{1,5})?$")
_FILE = re.compile(r"^[^/\x00\\]{1,255}$")


class BadRecord(ValueError):
    """Input that does not follow the protocol; the message names the field."""


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRecord(f"{where}: must be an object")
    return value


def _str(obj: dict[str, Any], key: str, where: str, *, required: bool = True, limit: int = MAX_FIELD) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadRecord(
            f"{where}.{key}: must be a non-empty string" if required else f"{where}.{key}: must be a string"
        )
    if len(value) > limit:
        raise BadRecord(f"{where}.{key}: longer than {limit} characters")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            # A JSON "\ud800" escape decodes to a lone surrogate, which SQLite and gRPC cannot store.
            raise BadRecord(f"{where}.{key}: not valid Unicode (lone surrogate)") from None
    return value


def is_did(text: str) -> bool:
    """Whether ``text`` looks like a DID."""
    return _DID.fullmatch(text) is not None


def is_rkey(text: str) -> bool:
    """Whether ``text`` is a valid record key (and so safe in URLs and paths)."""
    return _RKEY.fullmatch(text) is not None and text not in (".", "..")


def is_host(text: str) -> bool:
    """Whether ``text`` is a hostname, optionally with ``:port``."""
    return _HOST.fullmatch(text) is not None


def load_json(frame: str | bytes) -> dict[str, Any]:
    """A JSON object from a text frame; BadRecord for binary junk, invalid UTF-8, non-objects or huge frames."""
    if len(frame) > MAX_FRAME_BYTES:
        raise BadRecord(f"frame: larger than {MAX_FRAME_BYTES} bytes")
    try:
        value = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise BadRecord(f"frame: not JSON ({str(exc)[:80]})") from None
    return _obj(value, "frame")


# Jetstream


@dataclass(frozen=True)
class JetstreamEvent:
    """One Jetstream event: a commit (collection/rkey/operation set) or another kind."""

    did: str
    time_us: int
    kind: str
    operation: str = ""
    collection: str = ""
    rkey: str = ""
    record: dict[str, Any] | None = None


def parse_jetstream(frame: str | bytes) -> JetstreamEvent:
    """Parse a Jetstream frame."""
    obj = load_json(frame)
    time_us = obj.get("time_us")
    if not isinstance(time_us, int) or isinstance(time_us, bool) or time_us <= 0:
        raise BadRecord("time_us: must be a positive integer")
    did = _str(obj, "did", "event")
    kind = _str(obj, "kind", "event")
    if kind != "commit":
        return JetstreamEvent(did=did, time_us=time_us, kind=kind)
    commit = _obj(obj.get("commit"), "commit")
    operation = _str(commit, "operation", "commit")
    if operation not in ("create", "update", "delete"):
        raise BadRecord(f"commit.operation: unknown operation {operation!r}")
    record = None
    if operation != "delete":
        record = _obj(commit.get("record"), "commit.record")
    return JetstreamEvent(
        did=did,
        time_us=time_us,
        kind=kind,
        operation=operation,
        collection=_str(commit, "collection", "commit"),
        rkey=_str(commit, "rkey", "commit"),
        record=record,
    )


@dataclass(frozen=True)
class MemberRecord:
    """``sh.tangled.spindle.member``: ``subject`` may use the spindle ``instance``."""

    subject: str
    instance: str


@dataclass(frozen=True)
class RepoRecord:
    """``sh.tangled.repo``: the fields tack uses."""

    name: str
    knot: str
    spindle: str


@dataclass(frozen=True)
class CollaboratorRecord:
    """``sh.tangled.repo.collaborator``."""

    subject: str
    repo: str


def parse_member(record: dict[str, Any]) -> MemberRecord:
    """Parse a member record."""
    subject = _str(record, "subject", "member")
    if not is_did(subject):
        raise BadRecord("member.subject: not a DID")
    return MemberRecord(subject=subject, instance=_str(record, "instance", "member"))


def parse_repo(record: dict[str, Any]) -> RepoRecord:
    """Parse a repo record (``spindle`` may be absent: empty string)."""
    knot = _str(record, "knot", "repo")
    if not is_host(knot):
        raise BadRecord("repo.knot: not a hostname")
    return RepoRecord(
        name=_str(record, "name", "repo"), knot=knot, spindle=_str(record, "spindle", "repo", required=False)
    )


def parse_collaborator(record: dict[str, Any]) -> CollaboratorRecord:
    """Parse a collaborator record."""
    subject = _str(record, "subject", "collaborator")
    if not is_did(subject):
        raise BadRecord("collaborator.subject: not a DID")
    return CollaboratorRecord(subject=subject, repo=_str(record, "repo", "collaborator"))


# Knot event stream


@dataclass(frozen=True)
class KnotMessage:
    """A knot /events envelope."""

    rkey: str
    nsid: str
    event: dict[str, Any]


def parse_knot_frame(frame: str | bytes) -> KnotMessage:
    """Parse a knot /events envelope ``{rkey, nsid, event}``."""
    obj = load_json(frame)
    rkey = _str(obj, "rkey", "envelope")
    if not is_rkey(rkey):
        raise BadRecord("envelope.rkey: not a record key")
    return KnotMessage(
        rkey=rkey, nsid=_str(obj, "nsid", "envelope"), event=_obj(obj.get("event"), "envelope.event")
    )


@dataclass(frozen=True)
class TriggerRepo:
    """``triggerMetadata.repo``."""

    knot: str
    did: str
    name: str
    default_branch: str


@dataclass(frozen=True)
class Trigger:
    """``triggerMetadata``: the kind and the details for it."""

    kind: str
    repo: TriggerRepo
    ref: str = ""
    old_sha: str = ""
    new_sha: str = ""
    source_branch: str = ""
    target_branch: str = ""
    source_sha: str = ""
    action: str = ""
    inputs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Clone:
    """A workflow's clone options."""

    skip: bool = False
    depth: int = 0
    submodules: bool = False


@dataclass(frozen=True)
class Workflow:
    """One workflow of a pipeline, as the knot compiled it."""

    name: str
    engine: str
    raw: str
    clone: Clone


@dataclass(frozen=True)
class Pipeline:
    """A ``sh.tangled.pipeline`` record."""

    trigger: Trigger
    workflows: tuple[Workflow, ...]


def _trigger(obj: dict[str, Any]) -> Trigger:
    meta = _obj(obj.get("triggerMetadata"), "triggerMetadata")
    repo_obj = _obj(meta.get("repo"), "triggerMetadata.repo")
    repo = TriggerRepo(
        knot=_str(repo_obj, "knot", "triggerMetadata.repo"),
        did=_str(repo_obj, "did", "triggerMetadata.repo"),
        name=_str(repo_obj, "repo", "triggerMetadata.repo"),
        default_branch=_str(repo_obj, "defaultBranch", "triggerMetadata.repo", required=False),
    )
    kind = _str(meta, "kind", "triggerMetadata")
    if kind == "push":
        push = _obj(meta.get("push"), "triggerMetadata.push")
        where = "triggerMetadata.push"
        return Trigger(
            kind=kind,
            repo=repo,
            ref=_str(push, "ref", where),
            old_sha=_str(push, "oldSha", where, required=False),
            new_sha=_str(push, "newSha", where),
        )
    if kind == "pull_request":
        pr = _obj(meta.get("pullRequest"), "triggerMetadata.pullRequest")
        where = "triggerMetadata.pullRequest"
        return Trigger(
            kind=kind,
            repo=repo,
            source_branch=_str(pr, "sourceBranch", where),
            target_branch=_str(pr, "targetBranch", where),
            source_sha=_str(pr, "sourceSha", where),
            action=_str(pr, "action", where, required=False),
        )
    if kind == "manual":
        manual = meta.get("manual") or {}
        raw_inputs = _obj(manual, "triggerMetadata.manual").get("inputs") or []
        if not isinstance(raw_inputs, list):
            raise BadRecord("triggerMetadata.manual.inputs: must be a list")
        inputs = []
        for i, item in enumerate(raw_inputs):
            pair = _obj(item, f"triggerMetadata.manual.inputs[{i}]")
            where = f"triggerMetadata.manual.inputs[{i}]"
            inputs.append((_str(pair, "key", where), _str(pair, "value", where, required=False)))
        return Trigger(kind=kind, repo=repo, inputs=tuple(inputs))
    raise BadRecord(f"triggerMetadata.kind: unknown kind {kind!r}")


def _workflow(obj: object, i: int) -> Workflow:
    where = f"workflows[{i}]"
    wf = _obj(obj, where)
    name = _str(wf, "name", where, limit=255)
    if _FILE.fullmatch(name) is None or name in (".", ".."):
        raise BadRecord(f"{where}.name: not a file name")
    clone_obj = wf.get("clone") or {}
    clone = _obj(clone_obj, f"{where}.clone")
    depth = clone.get("depth", 0)
    if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= 1 << 31:
        raise BadRecord(f"{where}.clone.depth: must be a non-negative integer")
    return Workflow(
        name=name,
        engine=_str(wf, "engine", where, required=False),
        raw=_str(wf, "raw", where, required=False, limit=MAX_RAW_BYTES),
        clone=Clone(skip=clone.get("skip") is True, depth=depth, submodules=clone.get("submodules") is True),
    )


def parse_pipeline(event: dict[str, Any]) -> Pipeline:
    """Parse a ``sh.tangled.pipeline`` record; unknown fields and ``$type`` are ignored."""
    trigger = _trigger(event)
    raw_workflows = event.get("workflows")
    if raw_workflows is None:
        raw_workflows = []
    if not isinstance(raw_workflows, list):
        raise BadRecord("workflows: must be a list")
    if len(raw_workflows) > MAX_WORKFLOWS:
        raise BadRecord(f"workflows: more than {MAX_WORKFLOWS}")
    workflows = tuple(_workflow(w, i) for i, w in enumerate(raw_workflows))
    names = [w.name for w in workflows]
    if len(set(names)) != len(names):
        raise BadRecord("workflows: duplicate workflow names")
    return Pipeline(trigger=trigger, workflows=workflows)
