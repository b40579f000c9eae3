"""The create-build request made from a Spawn (tack_provider_buildkite.build_request)."""

from __future__ import annotations

from typing import Any

import pytest

from tack_common.pb import provider_pb2 as pb
from tack_provider_buildkite import build_request, workflow_config
from tack_provider_kit.provider import InvalidArgument
from tack_provider_kit.store import RunKey


SHA = "5cf26b27727eb6a0ebdc139cf6d39907372cf565"
BASE_ENV = {
    "TACK_BUILDKITE_TOKEN": "bk-secret",
    "TACK_BUILDKITE_ORG": "acme",
    "TACK_BUILDKITE_WEBHOOK_SECRET": "s",
}


# Build request


def _request(trigger: pb.Trigger) -> pb.SpawnRequest:
    return pb.SpawnRequest(
        knot="knot.test", pipeline_rkey="3m7abc", actor_did="did:plc:owner", trigger=trigger
    )


def _repo(default_branch: str = "") -> pb.Repo:
    return pb.Repo(knot="knot.test", did="did:plc:owner", name="hello", default_branch=default_branch)


def _push(ref: str) -> pb.Trigger:
    return pb.Trigger(
        kind=pb.TRIGGER_KIND_PUSH, repo=_repo(), push=pb.PushTrigger(ref=ref, old_sha="0" * 40, new_sha=SHA)
    )


def _pr() -> pb.Trigger:
    return pb.Trigger(
        kind=pb.TRIGGER_KIND_PULL_REQUEST,
        repo=_repo(),
        pull_request=pb.PullRequestTrigger(
            source_branch="feature", target_branch="main", source_sha=SHA, action="create"
        ),
    )


WORKFLOW = pb.Workflow(name="ci.yml", environment={"GREETING": "hi", "TANGLED_KNOT": "forged"})


def _plan(trigger: pb.Trigger, **config: Any) -> build_request.BuildPlan:
    parsed = workflow_config.parse({"pipeline": "ci", **config})
    return build_request.plan(_request(trigger), WORKFLOW, parsed, "acme")


def test_push_to_branch_builds_new_sha_on_branch() -> None:
    """A branch push builds newSha on the branch, with the run key in meta_data and Tangled env."""
    plan = _plan(_push("refs/heads/main"))
    body = plan.body
    assert (plan.org, plan.pipeline) == ("acme", "ci")
    assert (body["commit"], body["branch"], body["ignore_pipeline_branch_filters"]) == (SHA, "main", True)
    assert body["message"] == "tangled: push to main in hello (ci.yml)"
    assert body["meta_data"] == {
        "tack:knot": "knot.test",
        "tack:pipeline_rkey": "3m7abc",
        "tack:workflow": "ci.yml",
    }
    env = body["env"]
    assert env["TANGLED_KNOT"] == "knot.test", "workflow environment cannot forge TANGLED_ variables"
    assert env["GREETING"] == "hi"
    assert (env["TANGLED_TRIGGER_KIND"], env["TANGLED_REF"], env["TANGLED_NEW_SHA"]) == (
        "push",
        "refs/heads/main",
        SHA,
    )
    assert (env["TANGLED_REPO_DID"], env["TANGLED_REPO_NAME"], env["TANGLED_WORKFLOW"]) == (
        "did:plc:owner",
        "hello",
        "ci.yml",
    )
    assert env["TANGLED_PIPELINE_RKEY"] == "3m7abc" and "TANGLED_TAG" not in env
    assert "pull_request_base_branch" not in body and "pull_request_id" not in body


def test_push_of_tag_builds_on_tag_name() -> None:
    """A tag push uses the tag name as branch and says so in TANGLED_TAG and the message."""
    body = _plan(_push("refs/tags/v1.2.0")).body
    assert (body["branch"], body["commit"], body["env"]["TANGLED_TAG"]) == ("v1.2.0", SHA, "v1.2.0")
    assert body["message"] == "tangled: tag v1.2.0 in hello (ci.yml)"


def test_pull_request_builds_source_with_base_branch_and_no_number() -> None:
    """A pull request builds sourceSha on sourceBranch with pull_request_base_branch and no PR id."""
    body = _plan(_pr()).body
    assert (body["commit"], body["branch"], body["pull_request_base_branch"]) == (SHA, "feature", "main")
    assert "pull_request_id" not in body
    assert (
        body["env"]["TANGLED_PR_TARGET_BRANCH"] == "main"
        and body["env"]["TANGLED_TRIGGER_KIND"] == "pull_request"
    )
    assert body["message"] == "tangled: pull request feature → main in hello (ci.yml)"


def test_manual_trigger_needs_a_branch() -> None:
    """A manual run builds HEAD on the default branch; without one it asks for tack.buildkite.branch."""
    manual = pb.Trigger(
        kind=pb.TRIGGER_KIND_MANUAL,
        repo=_repo(),
        manual=pb.ManualTrigger(inputs=[pb.ManualInput(key="dry-run", value="1")]),
    )
    with pytest.raises(InvalidArgument, match=r"^tack\.buildkite\.branch: required"):
        _plan(manual)
    body = _plan(manual, branch="main").body
    assert (body["commit"], body["branch"], body["env"]["TANGLED_INPUT_DRY_RUN"]) == ("HEAD", "main", "1")


def test_overrides_and_message_template() -> None:
    """branch/commit/org/env/meta_data/clean_checkout/author overrides and message placeholders apply."""
    plan = _plan(
        _push("refs/heads/main"),
        org="other",
        branch="release",
        commit="abc",
        env={"FOO": "1"},
        meta_data={"team": "core"},
        clean_checkout=True,
        author={"name": "Ada", "email": "ada@example.org"},
        message="{{ci}} {kind} {branch}@{short_sha} of {repo} by {workflow}",
    )
    body = plan.body
    assert plan.org == "other"
    assert (body["branch"], body["commit"], body["clean_checkout"]) == ("release", "abc", True)
    assert body["message"] == "{ci} push release@abc of hello by ci.yml"
    assert body["env"]["FOO"] == "1" and body["meta_data"]["team"] == "core"
    assert body["author"] == {"name": "Ada", "email": "ada@example.org"}


def test_unknown_message_placeholder_is_refused() -> None:
    """A message template with an unknown placeholder names tack.buildkite.message."""
    with pytest.raises(InvalidArgument, match=r"^tack\.buildkite\.message: unknown placeholder '\{nope\}'"):
        _plan(_push("refs/heads/main"), message="hello {nope}")


def test_meta_data_round_trips_to_run_key() -> None:
    """A build's meta_data gives back the run key; foreign builds give None."""
    key = RunKey("knot.test", "3m7abc", "ci.yml")
    assert build_request.key_from_meta_data(build_request.meta_data_for(key)) == key
    assert build_request.key_from_meta_data({"tack:knot": "k"}) is None
    assert build_request.key_from_meta_data(None) is None


def test_an_untrusted_run_is_refused_unless_the_operator_lists_the_pipeline() -> None:
    """A fork's pull request (untrusted) is refused naming TACK_BUILDKITE_UNTRUSTED_PIPELINES; built when listed."""
    request = _request(_pr())
    request.untrusted = True
    config = workflow_config.parse({"pipeline": "app"})
    with pytest.raises(InvalidArgument, match="acme/app is not in TACK_BUILDKITE_UNTRUSTED_PIPELINES"):
        build_request.plan(request, WORKFLOW, config, "acme")
    with pytest.raises(InvalidArgument):
        build_request.plan(request, WORKFLOW, config, "acme", frozenset({"other/app"}))
    allowed = build_request.plan(request, WORKFLOW, config, "acme", frozenset({"acme/app"}))
    assert allowed.body["env"]["TANGLED_UNTRUSTED"] == "true"
    with pytest.raises(InvalidArgument, match="unknown key"):
        workflow_config.parse({"pipeline": "app", "allow_untrusted": True})


def test_a_current_tangled_run_carries_the_repo_did_and_its_clone_url() -> None:
    """With a repo DID the clone URL is https://<knot>/<repo DID>, and the pipeline URI and pull AT-URI are passed on."""
    trigger = _pr()
    trigger.repo.repo_did = "did:plc:repo7"
    trigger.pull_request.pull = "at://did:plc:author/sh.tangled.repo.pull/3mr"
    trigger.source_repo_did = "did:plc:fork1"
    trigger.source_knot = "fork.knot.example"
    request = _request(trigger)
    request.pipeline_uri = "at://did:web:knot1.tangled.sh/sh.tangled.pipeline/3m7abc"
    env = build_request.plan(request, WORKFLOW, workflow_config.parse({"pipeline": "app"}), "acme").body[
        "env"
    ]
    assert env["TANGLED_REPO_URL"] == "https://knot.test/did:plc:repo7"
    assert env["TANGLED_REPO_REPO_DID"] == "did:plc:repo7"
    assert env["TANGLED_PIPELINE_ID"] == request.pipeline_uri
    assert env["TANGLED_PR_PULL"] == trigger.pull_request.pull
    assert env["TANGLED_SOURCE_REPO_URL"] == "https://fork.knot.example/did:plc:fork1"


def test_a_manual_run_builds_its_commit_on_the_branch_of_its_ref() -> None:
    """A current manual trigger builds its sha on the branch its ref names, not HEAD of the default branch."""
    trigger = pb.Trigger(
        kind=pb.TRIGGER_KIND_MANUAL,
        repo=_repo(default_branch="main"),
        manual=pb.ManualTrigger(
            sha=SHA, ref="refs/heads/release", inputs=[pb.ManualInput(key="mode", value="fast")]
        ),
    )
    request = _request(trigger)
    body = build_request.plan(request, WORKFLOW, workflow_config.parse({"pipeline": "app"}), "acme").body
    assert (body["commit"], body["branch"]) == (SHA, "release")
    assert body["env"]["TANGLED_INPUT_MODE"] == "fast" and body["env"]["TANGLED_REF"] == "refs/heads/release"
