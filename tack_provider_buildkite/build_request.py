"""From a Tangled trigger to the body of Buildkite's create-build call, free of I/O.

- push to ``refs/heads/X``: commit ``newSha``, branch ``X``.
- push to ``refs/tags/X``: commit ``newSha``, branch ``X`` (the tag name). The create API has no tag
  field; a build whose branch names a tag is how Buildkite builds tags, and ``TANGLED_TAG`` says so
  explicitly to the steps.
- pull request: commit ``sourceSha``, branch ``sourceBranch``, ``pull_request_base_branch`` =
  ``targetBranch``. Tangled pull requests have no number, so no ``pull_request_id`` is sent.
- manual: the trigger's commit (current Tangled) on the branch of its ref, else ``HEAD`` on
  ``tack.buildkite.branch`` or the repository's default branch.

Untrusted runs (a fork's pull request run through "Run CI": the code is not the repository's) are
refused unless the operator lists the Buildkite pipeline in ``TACK_BUILDKITE_UNTRUSTED_PIPELINES``: a
build runs on your agents with the pipeline's secrets, so building a stranger's code must be the
operator's decision. (Not the workflow's: the workflow file of such a run is the fork's own.)

Every build carries ``meta_data`` ``tack:knot``, ``tack:pipeline_rkey`` and ``tack:workflow``: the
run's key, by which an existing build is found again instead of creating a second one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tack_common.pb import provider_pb2 as pb
from tack_provider_buildkite.workflow_config import WHERE, BuildkiteConfig
from tack_provider_kit.provider import InvalidArgument
from tack_provider_kit.store import RunKey
from tack_provider_kit.trigger_env import UNTRUSTED_REFUSED, tangled_env, trigger_facts


META_KNOT = "tack:knot"
META_RKEY = "tack:pipeline_rkey"
META_WORKFLOW = "tack:workflow"

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_]*)\}|[{}]")


@dataclass(frozen=True)
class BuildPlan:
    """Where to create the build and with what body."""

    org: str
    pipeline: str
    body: dict[str, Any]


def meta_data_for(key: RunKey) -> dict[str, str]:
    """The meta-data that ties a build to its run."""
    return {META_KNOT: key.knot, META_RKEY: key.pipeline_rkey, META_WORKFLOW: key.workflow}


def key_from_meta_data(meta: object) -> RunKey | None:
    """The run key carried by a build's meta-data; None for builds tack did not create."""
    if not isinstance(meta, Mapping):
        return None
    parts = [meta.get(name) for name in (META_KNOT, META_RKEY, META_WORKFLOW)]
    if not all(isinstance(part, str) and part for part in parts):
        return None
    knot, rkey, workflow = (str(part) for part in parts)
    return RunKey(knot, rkey, workflow)


def render(template: str, values: Mapping[str, str], where: str) -> str:
    """Fill ``{name}`` placeholders; ``{{``/``}}`` are literal braces; unknown names are an error."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name is None or name not in values:
            raise InvalidArgument(
                f"{where}: unknown placeholder {token!r} (known: {', '.join('{' + v + '}' for v in values)};"
                " write {{ and }} for literal braces)"
            )
        return values[name]

    return _PLACEHOLDER.sub(substitute, template)


def plan(
    request: pb.SpawnRequest,
    workflow: pb.Workflow,
    config: BuildkiteConfig,
    default_org: str,
    untrusted_pipelines: frozenset[str] = frozenset(),
) -> BuildPlan:
    """The create-build call for one workflow; InvalidArgument when the trigger cannot be built."""
    slug = f"{config.org or default_org}/{config.pipeline}"
    if request.untrusted and slug not in untrusted_pipelines:
        raise InvalidArgument(
            f"{UNTRUSTED_REFUSED}: {slug} is not in TACK_BUILDKITE_UNTRUSTED_PIPELINES, the operator's list of"
            " Buildkite pipelines that may build untrusted code with their agents and secrets"
        )
    values, commit, branch, default_message = trigger_facts(request.trigger)
    commit = config.commit or commit
    branch = config.branch or branch
    if not branch:
        raise InvalidArgument(
            f"{WHERE}.branch: required for this trigger (the knot did not say the repository's default branch)"
        )
    if not commit:
        raise InvalidArgument(f"{WHERE}.commit: required for this trigger (it carries no commit)")
    values = {
        **values,
        "branch": branch,
        "sha": commit,
        "short_sha": commit[:8] if commit != "HEAD" else commit,
        "repo": request.trigger.repo.name,
        "repo_did": request.trigger.repo.did,
        "knot": request.knot,
        "workflow": workflow.name,
        "pipeline_rkey": request.pipeline_rkey,
    }
    if config.message is not None:
        message = render(config.message, values, f"{WHERE}.message")
    else:
        message = render(default_message, values, "message")
    key = RunKey(request.knot, request.pipeline_rkey, workflow.name)
    env = {
        **{k: v for k, v in workflow.environment.items() if not k.startswith("TANGLED_")},
        **config.env,
        **tangled_env(request, workflow, values, commit, branch),
    }
    body: dict[str, Any] = {
        "commit": commit,
        "branch": branch,
        "message": message,
        "env": env,
        "meta_data": {**config.meta_data, **meta_data_for(key)},
        "ignore_pipeline_branch_filters": True,
        "clean_checkout": config.clean_checkout,
    }
    if request.trigger.WhichOneof("detail") == "pull_request":
        body["pull_request_base_branch"] = request.trigger.pull_request.target_branch
    if config.author is not None:
        body["author"] = {"name": config.author.name, "email": config.author.email}
    return BuildPlan(org=config.org or default_org, pipeline=config.pipeline, body=body)
