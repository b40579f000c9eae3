"""The PipelineRun tack creates for a workflow, and the validation of ``tack.tekton`` (docs/tekton-api.md §3)."""

from __future__ import annotations

from typing import Any

import pytest

from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.contract.checks import spawn_request
from tack_provider_kit.provider import InvalidArgument
from tack_provider_kit.store import RunKey
from tack_provider_kit.trigger_env import UNTRUSTED_REFUSED
from tack_provider_tekton.run_request import plan, run_name
from tack_provider_tekton.workflow_config import parse


def workflow(name: str = "ci.yml") -> pb.Workflow:
    return pb.Workflow(name=name, engine="tack", raw="engine: tack\n")


def build(config: dict[str, Any], request: pb.SpawnRequest | None = None) -> dict[str, Any]:
    request = request or spawn_request([workflow()])
    return plan(request, request.workflows[0], parse(config), "ci").body


def test_a_push_becomes_a_pipelinerun_of_the_named_pipeline_with_tacks_params() -> None:
    """pipelineRef, the built-in params (repo URL at the knot, commit, ref, repo DID, pipeline id) and identity."""
    request = spawn_request([workflow()])
    body = build({"pipeline": "app-ci"}, request)
    assert (body["apiVersion"], body["kind"]) == ("tekton.dev/v1", "PipelineRun")
    assert body["spec"]["pipelineRef"] == {"name": "app-ci"}
    params = {p["name"]: p["value"] for p in body["spec"]["params"]}
    assert params["tangled-repo-url"] == "https://knot.test/did:plc:repohello"
    assert params["tangled-commit"] == "a" * 40
    assert params["tangled-ref"] == "refs/heads/main"
    assert params["tangled-branch"] == "main"
    assert params["tangled-repo-repo-did"] == "did:plc:repohello"
    assert params["tangled-pipeline-id"] == request.pipeline_uri
    assert params["tangled-workflow"] == "ci.yml"
    meta = body["metadata"]
    assert meta["namespace"] == "ci"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "tack"
    assert meta["annotations"]["tack.tangled.org/pipeline-rkey"] == request.pipeline_rkey
    assert meta["annotations"]["tack.tangled.org/repo-did"] == "did:plc:repohello"


def test_user_params_win_and_options_land_where_tekton_v1_wants_them() -> None:
    """User params override tack's; the service account is spec.taskRunTemplate.serviceAccountName."""
    body = build(
        {
            "pipeline": "app-ci",
            "params": {"tangled-branch": "x", "flags": ["-v", 2], "opts": {"debug": True}},
            "workspaces": [{"name": "src", "volumeClaimTemplate": {"spec": {}}}],
            "serviceAccountName": "builder",
            "timeouts": {"pipeline": "1h30m", "tasks": "1h"},
            "labels": {"team": "core"},
        }
    )
    params = {p["name"]: p["value"] for p in body["spec"]["params"]}
    assert params["tangled-branch"] == "x"
    assert params["flags"] == ["-v", "2"]
    assert params["opts"] == {"debug": "true"}
    assert body["spec"]["taskRunTemplate"] == {"serviceAccountName": "builder"}
    assert body["spec"]["workspaces"] == [{"name": "src", "volumeClaimTemplate": {"spec": {}}}]
    assert body["spec"]["timeouts"] == {"pipeline": "1h30m", "tasks": "1h"}
    assert body["metadata"]["labels"]["team"] == "core"


def test_the_name_is_deterministic_and_fits_a_label() -> None:
    """The same run always gets the same name; another run another; every name is a DNS label of ≤ 63."""
    key = RunKey("knot.example.com", "3m2k", "A Very Long Workflow Name With Spaces And Stuff.yml")
    assert run_name(key) == run_name(key)
    assert run_name(key) != run_name(key._replace(pipeline_rkey="3m2l"))
    name = run_name(key)
    assert len(name) <= 63 and name.startswith("tack-a-very-long-workflow") and name.islower()
    assert run_name(RunKey("k", "r", "😀.yml")).startswith("tack-")


def test_untrusted_runs_need_a_pipeline_the_operator_listed() -> None:
    """A fork's code runs only on a Pipeline in TACK_TEKTON_UNTRUSTED_PIPELINES; its own file cannot opt in."""
    request = spawn_request([workflow()])
    request.untrusted = True
    config = parse({"pipeline": "app-ci"})
    with pytest.raises(InvalidArgument, match="app-ci is not in TACK_TEKTON_UNTRUSTED_PIPELINES") as refused:
        plan(request, request.workflows[0], config, "ci", frozenset({"other"}))
    assert str(refused.value).startswith(UNTRUSTED_REFUSED)
    with pytest.raises(InvalidArgument, match="unknown key"):
        parse({"pipeline": "app-ci", "allow_untrusted": True})
    body = plan(request, request.workflows[0], config, "ci", frozenset({"app-ci"})).body
    assert {p["name"]: p["value"] for p in body["spec"]["params"]}["tangled-untrusted"] == "true"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"serviceAccountName": "deployer"}, "tack.tekton.serviceAccountName: an untrusted run"),
        (
            {"workspaces": [{"name": "keys", "secret": {"secretName": "deploy-keys"}}]},
            "tack.tekton.workspaces[0]: an untrusted run",
        ),
        (
            {"workspaces": [{"name": "cache", "persistentVolumeClaim": {"claimName": "shared"}}]},
            "tack.tekton.workspaces[0]: an untrusted run",
        ),
    ],
)
def test_an_untrusted_run_cannot_reach_the_namespaces_accounts_or_volumes(
    extra: dict[str, Any], message: str
) -> None:
    """Even on a listed Pipeline, a fork's workflow cannot pick a service account or mount a secret or claim."""
    request = spawn_request([workflow()])
    request.untrusted = True
    config = parse({"pipeline": "app-ci", **extra})
    with pytest.raises(InvalidArgument) as refused:
        plan(request, request.workflows[0], config, "ci", frozenset({"app-ci"}))
    assert str(refused.value).startswith(message), str(refused.value)
    fresh = {"pipeline": "app-ci", "workspaces": [{"name": "src", "emptyDir": {}}]}
    allowed = plan(request, request.workflows[0], parse(fresh), "ci", frozenset({"app-ci"})).body
    assert allowed["spec"]["workspaces"] == [{"name": "src", "emptyDir": {}}]
    trusted = spawn_request([workflow()])
    assert plan(trusted, trusted.workflows[0], config, "ci").body["metadata"]["name"].startswith("tack-ci-")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "tack.tekton.pipeline: required"),
        ({"pipeline": "App_CI"}, "tack.tekton.pipeline: must be a Pipeline name"),
        ({"pipeline": "a", "pipelne": "b"}, "tack.tekton.pipelne: unknown key"),
        ({"pipeline": "a", "params": {"1x": "y"}}, "tack.tekton.params.1x: not a Tekton param name"),
        ({"pipeline": "a", "params": {"x": None}}, "tack.tekton.params.x: must be a string"),
        ({"pipeline": "a", "workspaces": {"src": {}}}, "tack.tekton.workspaces: must be a list"),
        (
            {"pipeline": "a", "workspaces": [{"name": "src"}]},
            "tack.tekton.workspaces[0]: needs exactly one of",
        ),
        (
            {"pipeline": "a", "workspaces": [{"name": "s", "emptyDir": {}, "secret": {}}]},
            "tack.tekton.workspaces[0]: needs exactly one of",
        ),
        (
            {"pipeline": "a", "timeouts": {"pipeline": "soon"}},
            "tack.tekton.timeouts.pipeline: must be a duration",
        ),
        ({"pipeline": "a", "timeouts": {"build": "1h"}}, "tack.tekton.timeouts.build: unknown key"),
        ({"pipeline": "a", "serviceAccountName": "Bad Name"}, "tack.tekton.serviceAccountName: must be a"),
        (
            {"pipeline": "a", "labels": {"tack.tangled.org/run": "x"}},
            "tack.tekton.labels.tack.tangled.org/run:",
        ),
        ({"pipeline": "a", "labels": {"team": "a b"}}, "tack.tekton.labels.team: a label value"),
        ({"pipeline": "a", "cancel": "Stop"}, "tack.tekton.cancel: must be one of"),
    ],
)
def test_bad_config_is_refused_naming_the_key(config: dict[str, Any], message: str) -> None:
    """Each unusable value is refused with a message that starts with the key at fault."""
    with pytest.raises(InvalidArgument) as caught:
        parse(config)
    assert str(caught.value).startswith(message), str(caught.value)
