"""What every provider tells a CI about the trigger: the facts of a Tangled trigger and the ``TANGLED_*`` values, free of I/O.

Buildkite passes them as build environment, Tekton as PipelineRun params; one
definition keeps the names and meanings the same for every provider.

- push to ``refs/heads/X``: commit ``newSha``, branch ``X``; to ``refs/tags/X``: the tag ``X``
  (also the branch, which is how CIs without a tag field build tags).
- pull request: commit ``sourceSha``, branch ``sourceBranch``.
- manual: the trigger's commit (current Tangled) on the branch of its ref, else ``HEAD`` on the
  repository's default branch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tack_common.pb import provider_pb2 as pb


UNTRUSTED_REFUSED = (
    "this run builds code from outside the repository (a fork's pull request run through Run CI)"
)
"""How every provider's refusal of an untrusted run (one the operator has not allowed) begins."""


def env_name(text: str) -> str:
    """``text`` as an environment variable name part (upper case, other characters as ``_``)."""
    return re.sub(r"[^A-Z0-9_]", "_", text.upper())


def trigger_facts(trigger: pb.Trigger) -> tuple[dict[str, str], str, str, str]:
    """(template values, commit, branch, default message) for the trigger.

    The values are ``kind``, ``ref``, ``branch``, ``tag``, ``sha``, ``source_branch`` and ``target_branch``.
    """
    kind: str = trigger.WhichOneof("detail") or ""
    values: dict[str, str] = {
        "kind": kind,
        "ref": "",
        "branch": "",
        "tag": "",
        "sha": "",
        "source_branch": "",
        "target_branch": "",
    }
    if kind == "push":
        push = trigger.push
        ref = push.ref
        values.update(ref=ref, sha=push.new_sha)
        if ref.startswith("refs/tags/"):
            values["tag"] = values["branch"] = ref.removeprefix("refs/tags/")
            message = "tangled: tag {tag} in {repo} ({workflow})"
        else:
            values["branch"] = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ref
            message = "tangled: push to {branch} in {repo} ({workflow})"
        return values, push.new_sha, values["branch"], message
    if kind == "pull_request":
        pr = trigger.pull_request
        values.update(
            branch=pr.source_branch,
            sha=pr.source_sha,
            source_branch=pr.source_branch,
            target_branch=pr.target_branch,
        )
        message = "tangled: pull request {source_branch} → {target_branch} in {repo} ({workflow})"
        return values, pr.source_sha, pr.source_branch, message
    manual = trigger.manual
    branch = manual.ref.removeprefix("refs/heads/") if manual.ref.startswith("refs/heads/") else ""
    if manual.ref.startswith("refs/tags/"):
        values["tag"] = branch = manual.ref.removeprefix("refs/tags/")
    branch = branch or trigger.repo.default_branch
    values.update(branch=branch, ref=manual.ref, sha=manual.sha)
    return (values, manual.sha or "HEAD", branch, "tangled: manual run on {branch} in {repo} ({workflow})")


def tangled_env(
    request: pb.SpawnRequest, workflow: pb.Workflow, values: Mapping[str, str], commit: str, branch: str
) -> dict[str, str]:
    """The ``TANGLED_*`` values of one workflow's run (``values`` as :func:`trigger_facts` made them)."""
    trigger = request.trigger
    repo = trigger.repo
    env = {
        "TANGLED_KNOT": request.knot,
        "TANGLED_PIPELINE_RKEY": request.pipeline_rkey,
        "TANGLED_WORKFLOW": workflow.name,
        "TANGLED_ACTOR_DID": request.actor_did,
        "TANGLED_REPO_KNOT": repo.knot,
        "TANGLED_REPO_DID": repo.did,
        "TANGLED_REPO_NAME": repo.name,
        "TANGLED_REPO_URL": repo_url(repo.knot, repo.repo_did)
        if repo.repo_did
        else f"https://{repo.knot}/{repo.did}/{repo.name}",
        "TANGLED_TRIGGER_KIND": values["kind"],
        "TANGLED_COMMIT": commit,
        "TANGLED_BRANCH": branch,
    }
    if repo.default_branch:
        env["TANGLED_REPO_DEFAULT_BRANCH"] = repo.default_branch
    if repo.repo_did:
        env["TANGLED_REPO_REPO_DID"] = repo.repo_did
    if request.pipeline_uri:
        env["TANGLED_PIPELINE_ID"] = request.pipeline_uri
    if trigger.source_repo_did:
        env["TANGLED_SOURCE_REPO_DID"] = trigger.source_repo_did
        env["TANGLED_SOURCE_REPO_URL"] = repo_url(trigger.source_knot or repo.knot, trigger.source_repo_did)
    if request.untrusted:
        env["TANGLED_UNTRUSTED"] = "true"
    if request.recovered:
        env["TANGLED_RECOVERED"] = "true"
    kind = values["kind"]
    if kind == "push":
        env.update(
            TANGLED_REF=trigger.push.ref,
            TANGLED_OLD_SHA=trigger.push.old_sha,
            TANGLED_NEW_SHA=trigger.push.new_sha,
        )
        if values["tag"]:
            env["TANGLED_TAG"] = values["tag"]
    elif kind == "pull_request":
        pr = trigger.pull_request
        env.update(
            TANGLED_PR_SOURCE_BRANCH=pr.source_branch,
            TANGLED_PR_TARGET_BRANCH=pr.target_branch,
            TANGLED_PR_SOURCE_SHA=pr.source_sha,
            TANGLED_PR_ACTION=pr.action,
        )
        if pr.pull:
            env["TANGLED_PR_PULL"] = pr.pull
    else:
        if trigger.manual.ref:
            env["TANGLED_REF"] = trigger.manual.ref
        for item in trigger.manual.inputs:
            env[f"TANGLED_INPUT_{env_name(item.key)}"] = item.value
    return env


def repo_url(knot: str, repo_did: str) -> str:
    """Where a current-Tangled repository is cloned from."""
    return f"https://{knot}/{repo_did}"
