"""From a Tangled trigger to the PipelineRun tack creates, free of I/O (docs/tekton-api.md §3).

- The name is deterministic (``tack-<workflow>-<16 hex>``, a hash of knot, pipeline rkey and workflow):
  creating it twice answers 409, so a create whose outcome is unknown is simply sent again.
- Params: tack's ``tangled-*`` params (each ``TANGLED_*`` value every provider passes, in kebab case:
  ``tangled-repo-url``, ``tangled-commit``, ``tangled-ref``, ``tangled-repo-repo-did``,
  ``tangled-pipeline-id``, …), then the workflow's ``params`` over them.
- Labels: ``app.kubernetes.io/managed-by: tack`` (what the status watch selects), ``tack.tangled.org/run``
  (the run's 40-hex hash, by which an existing PipelineRun is recognised as this run's),
  ``tack.tangled.org/workflow`` and ``tack.tangled.org/trigger``, plus the workflow's ``labels``.
  Annotations carry the run's key and trigger in full (``tack.tangled.org/knot``, ``pipeline-rkey``,
  ``workflow``, ``repo-did``, ``commit``, ``ref``, ``pipeline-uri``, ``actor``).
- Untrusted runs (a fork's code, with the fork's own workflow file) are refused unless the operator
  lists the Pipeline in ``TACK_TEKTON_UNTRUSTED_PIPELINES``: a PipelineRun runs with the namespace's
  service accounts, secrets and volumes. Even then the workflow may not choose a service account or
  bind a workspace to anything but ``emptyDir`` or ``volumeClaimTemplate`` (fresh, empty storage).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.provider import InvalidArgument
from tack_provider_kit.store import RunKey
from tack_provider_kit.trigger_env import UNTRUSTED_REFUSED, tangled_env, trigger_facts
from tack_provider_tekton.workflow_config import WHERE, ParamValue, TektonConfig


API_VERSION = "tekton.dev/v1"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "tack"
RUN_LABEL = "tack.tangled.org/run"
WORKFLOW_LABEL = "tack.tangled.org/workflow"
TRIGGER_LABEL = "tack.tangled.org/trigger"
ANNOTATION = "tack.tangled.org/"
SELECTOR = f"{MANAGED_BY}={MANAGER}"


@dataclass(frozen=True)
class RunPlan:
    """The PipelineRun to create for one workflow."""

    name: str
    run_hash: str
    body: dict[str, Any]


def run_hash(key: RunKey) -> str:
    """The run's 40-hex identity, short enough for a label value."""
    return hashlib.sha256(f"{key.knot}\n{key.pipeline_rkey}\n{key.workflow}".encode()).hexdigest()[:40]


def _slug(text: str, limit: int) -> str:
    stem = text.rsplit(".", 1)[0] if text.endswith((".yml", ".yaml")) else text
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:limit].strip("-")


def run_name(key: RunKey) -> str:
    """The PipelineRun's name: a DNS label that also fits the ``tekton.dev/pipelineRun`` label (≤ 63)."""
    slug = _slug(key.workflow, 24)
    return f"tack-{slug}-{run_hash(key)[:16]}" if slug else f"tack-{run_hash(key)[:16]}"


def _label_value(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")


def builtin_params(request: pb.SpawnRequest, workflow: pb.Workflow) -> dict[str, str]:
    """tack's own params: every ``TANGLED_*`` value, named in kebab case."""
    values, commit, branch, _ = trigger_facts(request.trigger)
    values = {**values, "sha": commit, "branch": branch}
    env = tangled_env(request, workflow, values, commit, branch)
    return {name.lower().replace("_", "-"): value for name, value in env.items()}


def _param_list(params: dict[str, ParamValue]) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in params.items()]


UNTRUSTED_WORKSPACES = ("emptyDir", "volumeClaimTemplate")


def _check_untrusted(config: TektonConfig, untrusted_pipelines: frozenset[str]) -> None:
    """An untrusted run's own workflow file may not reach the namespace's secrets or volumes."""
    if config.pipeline not in untrusted_pipelines:
        raise InvalidArgument(
            f"{UNTRUSTED_REFUSED}: {config.pipeline} is not in TACK_TEKTON_UNTRUSTED_PIPELINES, the operator's"
            " list of Pipelines that may run untrusted code with this namespace's service accounts and secrets"
        )
    if config.service_account is not None:
        raise InvalidArgument(
            f"{WHERE}.serviceAccountName: an untrusted run (a fork's pull request) may not choose a service account"
        )
    for index, binding in enumerate(config.workspaces):
        if not any(source in binding for source in UNTRUSTED_WORKSPACES):
            raise InvalidArgument(
                f"{WHERE}.workspaces[{index}]: an untrusted run (a fork's pull request) may bind workspaces"
                f" only to {' or '.join(UNTRUSTED_WORKSPACES)}"
            )


def plan(
    request: pb.SpawnRequest,
    workflow: pb.Workflow,
    config: TektonConfig,
    namespace: str,
    untrusted_pipelines: frozenset[str] = frozenset(),
) -> RunPlan:
    """The PipelineRun for one workflow; InvalidArgument when the trigger cannot run."""
    if request.untrusted:
        _check_untrusted(config, untrusted_pipelines)
    key = RunKey(request.knot, request.pipeline_rkey, workflow.name)
    builtin = builtin_params(request, workflow)
    params: dict[str, ParamValue] = {**builtin, **config.params}
    trigger = request.trigger
    kind = trigger.WhichOneof("detail") or ""
    identity = run_hash(key)
    name = run_name(key)
    annotations = {
        **config.annotations,
        f"{ANNOTATION}knot": key.knot,
        f"{ANNOTATION}pipeline-rkey": key.pipeline_rkey,
        f"{ANNOTATION}workflow": key.workflow,
        f"{ANNOTATION}repo-did": trigger.repo.repo_did or trigger.repo.did,
        f"{ANNOTATION}commit": builtin["tangled-commit"],
        f"{ANNOTATION}actor": request.actor_did,
    }
    if builtin.get("tangled-ref"):
        annotations[f"{ANNOTATION}ref"] = builtin["tangled-ref"]
    if request.pipeline_uri:
        annotations[f"{ANNOTATION}pipeline-uri"] = request.pipeline_uri
    spec: dict[str, Any] = {"pipelineRef": {"name": config.pipeline}, "params": _param_list(params)}
    if config.workspaces:
        spec["workspaces"] = [dict(w) for w in config.workspaces]
    if config.service_account:
        spec["taskRunTemplate"] = {"serviceAccountName": config.service_account}
    if config.timeouts:
        spec["timeouts"] = dict(config.timeouts)
    body = {
        "apiVersion": API_VERSION,
        "kind": "PipelineRun",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                **config.labels,
                MANAGED_BY: MANAGER,
                RUN_LABEL: identity,
                WORKFLOW_LABEL: _label_value(key.workflow) or "workflow",
                TRIGGER_LABEL: kind,
            },
            "annotations": annotations,
        },
        "spec": spec,
    }
    return RunPlan(name=name, run_hash=identity, body=body)
