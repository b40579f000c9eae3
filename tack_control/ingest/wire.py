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
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
MAX_CHANGED_FILES = 10_000
MAX_PUSH_OPTIONS = 50
SKIP_CI_OPTIONS = frozenset({"skip-ci", "ci-skip"})


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


def is_sha(text: str) -> bool:
    """Whether ``text`` is a lowercase commit id: 40 hex (SHA-1) or 64 hex (SHA-256 repositories)."""
    return _SHA.fullmatch(text) is not None


def is_zero_sha(text: str) -> bool:
    """Whether ``text`` is the null commit id (a ref created or deleted), of either width."""
    return is_sha(text) and text.strip("0") == ""


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
    """``sh.tangled.repo``: the fields tack uses. ``repo_did`` is empty for a repository of the 2025 protocol."""

    name: str
    knot: str
    spindle: str
    repo_did: str = ""


@dataclass(frozen=True)
class CollaboratorRecord:
    """``sh.tangled.repo.collaborator``: ``repo`` is a repo DID (current Tangled) or an AT-URI (2025)."""

    subject: str
    repo: str


def parse_member(record: dict[str, Any]) -> MemberRecord:
    """Parse a member record."""
    subject = _str(record, "subject", "member")
    if not is_did(subject):
        raise BadRecord("member.subject: not a DID")
    return MemberRecord(subject=subject, instance=_str(record, "instance", "member"))


def parse_repo(record: dict[str, Any]) -> RepoRecord:
    """Parse a repo record (``spindle``, ``repoDid`` and, when there is a ``repoDid``, ``name`` may be absent)."""
    knot = _str(record, "knot", "repo")
    if not is_host(knot):
        raise BadRecord("repo.knot: not a hostname")
    repo_did = _str(record, "repoDid", "repo", required=False)
    if repo_did and not is_did(repo_did):
        raise BadRecord("repo.repoDid: not a DID")
    return RepoRecord(
        name=_str(record, "name", "repo", required=not repo_did),
        knot=knot,
        spindle=_str(record, "spindle", "repo", required=False),
        repo_did=repo_did,
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
    """A knot /events envelope; ``created`` (Unix ns, the knot's clock) is 0 when the knot does not send one."""

    rkey: str
    nsid: str
    event: dict[str, Any]
    created: int = 0


def parse_knot_frame(frame: str | bytes) -> KnotMessage:
    """Parse a knot /events envelope ``{rkey, nsid, event, created?}``."""
    obj = load_json(frame)
    rkey = _str(obj, "rkey", "envelope")
    if not is_rkey(rkey):
        raise BadRecord("envelope.rkey: not a record key")
    created = obj.get("created", 0)
    if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created < 2**63:
        raise BadRecord("envelope.created: must be a non-negative integer (Unix nanoseconds)")
    return KnotMessage(
        rkey=rkey,
        nsid=_str(obj, "nsid", "envelope"),
        event=_obj(obj.get("event"), "envelope.event"),
        created=created,
    )


def _str_list(
    obj: dict[str, Any], key: str, where: str, limit: int, item_limit: int = MAX_FIELD
) -> tuple[str, ...]:
    """An optional list of strings (absent and null mean empty)."""
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRecord(f"{where}.{key}: must be a list")
    if len(value) > limit:
        raise BadRecord(f"{where}.{key}: more than {limit} entries")
    return tuple(_str({"v": v}, "v", f"{where}.{key}[{i}]", limit=item_limit) for i, v in enumerate(value))


@dataclass(frozen=True)
class RefUpdate:
    """``sh.tangled.git.refUpdate`` as current knots (v1.14+, Knot2) send it."""

    repo_did: str
    ref: str
    old_sha: str
    new_sha: str
    committer: str = ""
    owner: str = ""
    changed_files: tuple[str, ...] = ()
    push_options: tuple[str, ...] = ()

    @property
    def deleted(self) -> bool:
        """Whether the push deleted the ref."""
        return is_zero_sha(self.new_sha)

    @property
    def skip_ci(self) -> bool:
        """Whether the pusher asked for no CI (``git push -o skip-ci``)."""
        return not SKIP_CI_OPTIONS.isdisjoint(self.push_options)


def parse_ref_update(event: dict[str, Any]) -> RefUpdate | None:
    """Parse a refUpdate; None for the older shape (``repoDid`` is the owner, ``repoName`` the name), which
    knots of the 2025 protocol send beside their ``sh.tangled.pipeline`` triggers and tack does not act on."""
    if "repo" not in event and "repoName" in event:
        return None
    where = "refUpdate"
    repo_did = _str(event, "repo", where)
    if not is_did(repo_did):
        raise BadRecord("refUpdate.repo: not a DID")
    ref = _str(event, "ref", where, required=False, limit=2560)
    old_sha = _str(event, "oldSha", where, required=False)
    new_sha = _str(event, "newSha", where, required=False)
    if ref or new_sha or old_sha:
        for key, value in (("oldSha", old_sha), ("newSha", new_sha)):
            if not is_sha(value):
                raise BadRecord(f"refUpdate.{key}: not a 40- or 64-hex commit id")
        if len(old_sha) != len(new_sha):
            raise BadRecord("refUpdate: oldSha and newSha are of different widths")
        if not ref.startswith("refs/"):
            raise BadRecord("refUpdate.ref: not a full ref (refs/...)")
    committer = _str(event, "committerDid", where, required=False)
    owner = _str(event, "ownerDid", where, required=False)
    for key, value in (("committerDid", committer), ("ownerDid", owner)):
        if value and not is_did(value):
            raise BadRecord(f"refUpdate.{key}: not a DID")
    return RefUpdate(
        repo_did=repo_did,
        ref=ref,
        old_sha=old_sha,
        new_sha=new_sha,
        committer=committer,
        owner=owner,
        changed_files=_str_list(event, "changedFiles", where, MAX_CHANGED_FILES, item_limit=4096),
        push_options=_str_list(event, "pushOptions", where, MAX_PUSH_OPTIONS),
    )


@dataclass(frozen=True)
class AclUpdate:
    """A knot's ``sh.tangled.repo.collaboratorUpdate`` (``repo_did`` set) or ``sh.tangled.knot.memberUpdate``."""

    op: str
    subject: str
    repo_did: str = ""


def parse_acl_update(event: dict[str, Any], with_repo: bool) -> AclUpdate:
    """Parse ``{op: add|remove, subject, repo?}``."""
    where = "aclUpdate"
    op = _str(event, "op", where)
    if op not in ("add", "remove"):
        raise BadRecord(f"aclUpdate.op: unknown op {op!r}")
    subject = _str(event, "subject", where)
    if not is_did(subject):
        raise BadRecord("aclUpdate.subject: not a DID")
    repo_did = _str(event, "repo", where) if with_repo else ""
    if with_repo and not is_did(repo_did):
        raise BadRecord("aclUpdate.repo: not a DID")
    return AclUpdate(op=op, subject=subject, repo_did=repo_did)


@dataclass(frozen=True)
class TriggerRepo:
    """``triggerMetadata.repo``: ``name`` is the repository name (2025) or its record key (current Tangled)."""

    knot: str
    did: str
    name: str
    default_branch: str
    repo_did: str = ""


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
    pull: str = ""
    inputs: tuple[tuple[str, str], ...] = ()
    sha: str = ""
    """A manual trigger's commit (current Tangled)."""
    source_repo: str = ""
    """``triggerMetadata.sourceRepo``: the DID of the repository the commit comes from, when not ``repo``."""

    @property
    def commit(self) -> str:
        """The commit this trigger builds ("" when the record does not say)."""
        return {"push": self.new_sha, "pull_request": self.source_sha, "manual": self.sha}.get(self.kind, "")


@dataclass(frozen=True)
class Clone:
    """A workflow's clone options."""

    skip: bool = False
    depth: int = 0
    submodules: bool = False
    tags: bool = False


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
        repo_did=_str(repo_obj, "repoDid", "triggerMetadata.repo", required=False),
    )
    if repo.repo_did and not is_did(repo.repo_did):
        raise BadRecord("triggerMetadata.repo.repoDid: not a DID")
    source_repo = _str(meta, "sourceRepo", "triggerMetadata", required=False)
    if source_repo and not is_did(source_repo):
        raise BadRecord("triggerMetadata.sourceRepo: not a DID")
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
            source_repo=source_repo,
        )
    if kind == "pull_request":
        pr = _obj(meta.get("pullRequest"), "triggerMetadata.pullRequest")
        where = "triggerMetadata.pullRequest"
        return Trigger(
            kind=kind,
            repo=repo,
            # Optional in the trigger lexicon: a fork's pull request run through Run CI may carry none.
            source_branch=_str(pr, "sourceBranch", where, required=False),
            target_branch=_str(pr, "targetBranch", where),
            source_sha=_str(pr, "sourceSha", where),
            action=_str(pr, "action", where, required=False),
            pull=_str(pr, "pull", where, required=False),
            source_repo=source_repo,
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
        manual_obj = _obj(manual, "triggerMetadata.manual")
        return Trigger(
            kind=kind,
            repo=repo,
            inputs=tuple(inputs),
            sha=_str(manual_obj, "sha", "triggerMetadata.manual", required=False),
            ref=_str(manual_obj, "ref", "triggerMetadata.manual", required=False),
            source_repo=source_repo,
        )
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
        clone=Clone(
            skip=clone.get("skip") is True,
            depth=depth,
            submodules=clone.get("submodules") is True,
            tags=clone.get("tags") is True,
        ),
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
