"""From a Tangled trigger to the builds.sr.ht job tack submits, free of I/O (docs/sourcehut-api.md §3, §5, §9).

- Environment: the workflow's top-level ``environment:``, under the manifest's own ``environment:``, then
  every ``TANGLED_*`` value every provider passes (knot, pipeline, workflow, repo DID,
  commit, ref, ...) goes into the manifest's ``environment:``; tack's values win (a job must not be able to
  pass for another workflow).
- Sources: the repository's entries in ``sources:`` (its clone URL, with or without ``.git`` or a
  ``#ref``) are pinned to the pushed commit (``url#commit``); a manifest without ``sources:`` gets
  the repository at that commit as its only source. For a pull request from a fork, the fork is cloned.
- Tags: ``tack``, the repository and workflow names, then ``tack-<run hash>``, the run's unique tag, by
  which a job whose submit had an unknown outcome is found again (only in that place: a repository or
  workflow named like a run tag does not match); then the workflow's tags, which may not use ``tack``
  or ``tack-*``. The note says what triggered the job (or the workflow's own ``note``) and always ends
  with the line naming the run.
- Untrusted runs (a fork's code, with the fork's own workflow file) are refused unless the operator set
  ``TACK_SOURCEHUT_UNTRUSTED``; even then they are submitted without secrets, and a manifest that asks
  for ``secrets:`` or ``oauth:`` (a token acting as the account), ``triggers:`` (mail or webhooks sent
  in the account's name) or ``artifacts:`` (files published under the account) is refused.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import yaml

from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.provider import InvalidArgument
from tack_provider_kit.store import RunKey
from tack_provider_kit.trigger_env import UNTRUSTED_REFUSED, tangled_env, trigger_facts
from tack_provider_sourcehut.manifest import MAX_MANIFEST_BYTES, WHERE
from tack_provider_sourcehut.workflow_config import MAX_NOTE, SourcehutConfig


TAG_PREFIX = "tack-"
RUN_TAG_AT = 3
"""Where the run tag sits in a job's tags (after ``tack``, the repository and the workflow)."""
UNTRUSTED_REFUSED_KEYS = (
    ("secrets", "secrets"),
    ("oauth", "an OAuth token of the account"),
    ("triggers", "triggers (mail or webhooks sent in the account's name)"),
    ("artifacts", "artifacts (files published under the account)"),
)


@dataclass(frozen=True)
class JobPlan:
    """What to submit for one workflow."""

    manifest: str
    tags: list[str]
    note: str
    secrets: bool | None
    """False: submitted with secrets disabled; None: builds.sr.ht's default."""
    visibility: str | None
    run_tag: str
    tasks: list[str]

    def to_json(self) -> dict[str, Any]:
        """The form kept in the run's data."""
        return {
            "manifest": self.manifest,
            "tags": self.tags,
            "note": self.note,
            "secrets": self.secrets,
            "visibility": self.visibility,
            "run_tag": self.run_tag,
            "tasks": self.tasks,
        }


def run_tag(key: RunKey) -> str:
    """The run's unique job tag: ``tack-`` and 32 hex digits of a hash of its key."""
    digest = hashlib.sha256(f"{key.knot}\n{key.pipeline_rkey}\n{key.workflow}".encode()).hexdigest()
    return TAG_PREFIX + digest[:32]


def is_run_job(tags: object, tag: str) -> bool:
    """Whether a job's ``tags`` (as builds.sr.ht reads them back) are those of the run with run tag ``tag``."""
    return isinstance(tags, list) and len(tags) > RUN_TAG_AT and tags[0] == "tack" and tags[RUN_TAG_AT] == tag


def _tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:128] or "x"


def _bare(url: str) -> str:
    return url.split("#", 1)[0].rstrip("/").removesuffix(".git").lower()


def _sources(sources: list[str] | None, urls: set[str], clone: str, commit: str) -> list[str]:
    if sources is None:
        return [f"{clone}#{commit}"]
    return [f"{s.split('#', 1)[0]}#{commit}" if _bare(s) in urls else s for s in sources]


def _check_untrusted(config: SourcehutConfig, allowed: bool) -> None:
    if not allowed:
        raise InvalidArgument(
            f"{UNTRUSTED_REFUSED}: TACK_SOURCEHUT_UNTRUSTED is not set, so this tack does not submit"
            " untrusted code to builds.sr.ht"
        )
    for key, what in UNTRUSTED_REFUSED_KEYS:
        if key in config.manifest.data:
            raise InvalidArgument(
                f"{WHERE}.{key}: an untrusted run (a fork's pull request) may not ask for {what}"
            )


def plan(
    request: pb.SpawnRequest, workflow: pb.Workflow, config: SourcehutConfig, untrusted_allowed: bool
) -> JobPlan:
    """The job for one workflow; InvalidArgument when the trigger cannot run."""
    if request.untrusted:
        _check_untrusted(config, untrusted_allowed)
    key = RunKey(request.knot, request.pipeline_rkey, workflow.name)
    values, commit, branch, message = trigger_facts(request.trigger)
    values = {**values, "sha": commit, "branch": branch}
    env = tangled_env(request, workflow, values, commit, branch)
    data = dict(config.manifest.data)
    workflow_env = {k: v for k, v in workflow.environment.items() if not k.startswith("TANGLED_")}
    data["environment"] = {**workflow_env, **(data.get("environment") or {}), **env}
    clone = env.get("TANGLED_SOURCE_REPO_URL") or env["TANGLED_REPO_URL"]
    repo = request.trigger.repo
    urls = {
        _bare(clone),
        _bare(env["TANGLED_REPO_URL"]),
        _bare(f"https://{repo.knot}/{repo.did}/{repo.name}"),
    }
    data["sources"] = _sources(data.get("sources"), urls, clone, commit)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=4096)
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise InvalidArgument(
            f"{WHERE}: larger than {MAX_MANIFEST_BYTES} bytes with tack's environment added"
        )
    tag = run_tag(key)
    tags = ["tack", _tag(repo.name), _tag(workflow.name), tag, *config.tags]
    described = (
        config.note
        if config.note is not None
        else message.format(**values, repo=repo.name, workflow=workflow.name)
    )
    signature = f"\n\ntack run {key} ({tag})"
    return JobPlan(
        manifest=text,
        tags=tags,
        note=described[: max(0, MAX_NOTE - len(signature))] + signature,
        secrets=False if request.untrusted else config.secrets,
        visibility=config.visibility,
        run_tag=tag,
        tasks=config.manifest.task_names,
    )
