"""The job tack submits for a workflow, and the validation of ``tack.sourcehut`` and its manifest."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tack_common.env import ConfigError
from tack_common.pb import provider_pb2 as pb
from tack_provider_kit.contract.checks import spawn_request
from tack_provider_kit.provider import InvalidArgument
from tack_provider_kit.store import RunKey
from tack_provider_kit.trigger_env import UNTRUSTED_REFUSED
from tack_provider_sourcehut.config import Settings
from tack_provider_sourcehut.job_request import JobPlan, is_run_job, plan, run_tag
from tack_provider_sourcehut.manifest import MAX_MANIFEST_BYTES
from tack_provider_sourcehut.workflow_config import MAX_NOTE, parse, parse_json


MANIFEST = "image: alpine/edge\ntasks:\n  - build: |\n      make\n  - test: make check\n"


BOMB = "\n".join(
    [
        "image: a",
        "repositories:",
        "  l0: &l0 [x, x]",
        *(f"  l{i}: &l{i} [*l{i - 1}, *l{i - 1}]" for i in range(1, 32)),
        "tasks:",
        "  - a: b",
    ]
)
"""64 aliases doubling 31 times: 2^32 values once written out."""


def workflow(name: str = "ci.yml") -> pb.Workflow:
    return pb.Workflow(name=name, engine="tack", raw="engine: tack\n")


def job(config: dict[str, Any], request: pb.SpawnRequest | None = None, untrusted: bool = False) -> JobPlan:
    request = request or spawn_request([workflow()])
    return plan(request, request.workflows[0], parse(config), untrusted)


def test_a_push_submits_the_manifest_with_tacks_environment_and_the_commit_checked_out() -> None:
    """TANGLED_* values join the user's environment:; the manifest gains the repo at the commit."""
    request = spawn_request([workflow()])
    submitted = job(
        {"manifest": MANIFEST.replace("tasks:", "environment:\n  MINE: kept\ntasks:")},
        request,
    )
    manifest = yaml.safe_load(submitted.manifest)
    env = manifest["environment"]
    assert env["TANGLED_KNOT"] == "knot.test"
    assert env["TANGLED_PIPELINE_RKEY"] == request.pipeline_rkey
    assert env["TANGLED_WORKFLOW"] == "ci.yml"
    assert env["TANGLED_REPO_DID"] == "did:plc:owner"
    assert env["TANGLED_REPO_REPO_DID"] == "did:plc:repohello"
    assert env["TANGLED_COMMIT"] == "a" * 40
    assert env["TANGLED_REF"] == "refs/heads/main"
    assert env["TANGLED_BRANCH"] == "main"
    assert env["MINE"] == "kept"
    assert manifest["sources"] == ["https://knot.test/did:plc:repohello#" + "a" * 40]
    assert manifest["tasks"] == [{"build": "make\n"}, {"test": "make check"}]
    assert submitted.tasks == ["build", "test"]
    assert submitted.secrets is None and submitted.visibility is None


def test_the_workflows_environment_joins_under_the_manifests_own_and_tacks_values() -> None:
    """A workflow's top-level environment: is passed; the manifest's own values win over it, tack's over both,
    and TANGLED_* names from the workflow are dropped."""
    request = spawn_request([workflow()])
    request.workflows[0].environment.update(
        {"FROM_WORKFLOW": "w", "SHARED": "workflow", "TANGLED_COMMIT": "forged"}
    )
    submitted = job(
        {"manifest": MANIFEST.replace("tasks:", "environment:\n  SHARED: manifest\ntasks:")}, request
    )
    env = yaml.safe_load(submitted.manifest)["environment"]
    assert env["FROM_WORKFLOW"] == "w"
    assert env["SHARED"] == "manifest"
    assert env["TANGLED_COMMIT"] == "a" * 40


def test_the_repositorys_own_source_entries_are_pinned_to_the_commit_and_others_left_alone() -> None:
    """Entries naming the repository (with .git, a trailing slash or a #ref) are pinned; other repos are not."""
    manifest = {
        "image": "debian/stable",
        "sources": [
            "https://knot.test/did:plc:repohello.git#main",
            "https://knot.test/did:plc:owner/hello/",
            "https://git.sr.ht/~x/lib#v1",
        ],
        "tasks": [{"t": "true"}],
    }
    sources = yaml.safe_load(job({"manifest": manifest}).manifest)["sources"]
    assert sources == [
        "https://knot.test/did:plc:repohello.git#" + "a" * 40,
        "https://knot.test/did:plc:owner/hello/#" + "a" * 40,
        "https://git.sr.ht/~x/lib#v1",
    ]


def test_tags_and_note_identify_the_run_and_the_run_tag_is_unique_per_workflow() -> None:
    """Tags: tack, repo, workflow, the run tag, then the user's; the note says what triggered it and names the run."""
    request = spawn_request([workflow("ci.yml")])
    submitted = job({"manifest": MANIFEST, "tags": ["nightly"], "visibility": "PRIVATE"}, request)
    key = RunKey("knot.test", request.pipeline_rkey, "ci.yml")
    assert submitted.tags == ["tack", "hello", "ci.yml", run_tag(key), "nightly"]
    assert submitted.run_tag == run_tag(key) != run_tag(key._replace(workflow="other.yml"))
    assert submitted.note.startswith("tangled: push to main in hello (ci.yml)")
    assert str(key) in submitted.note
    assert submitted.visibility == "PRIVATE"
    assert is_run_job(submitted.tags, submitted.run_tag)


def test_a_workflow_cannot_pass_for_another_run() -> None:
    """Its own note keeps the line naming its run (also when the note is as long as allowed); only the run tag's
    place after tack, repository and workflow counts, so a tag or name equal to another run's tag does not."""
    request = spawn_request([workflow("ci.yml")])
    own = run_tag(RunKey("knot.test", request.pipeline_rkey, "ci.yml"))
    mine = job({"manifest": MANIFEST, "note": "mine"}, request).note
    assert mine.startswith("mine\n\n") and mine.endswith(f"({own})")
    longest = job({"manifest": MANIFEST, "note": "x" * MAX_NOTE}, request).note
    assert len(longest) <= MAX_NOTE and longest.endswith(f"({own})")
    other = run_tag(RunKey("knot.test", "3zzzzzzzzzzzz", "deploy.yml"))
    assert not is_run_job(["tack", other, "ci.yml", own], other)
    assert not is_run_job(["tack", "hello", "ci.yml", own, other], other)
    assert not is_run_job(["nightly", "hello", "ci.yml", other], other)
    assert not is_run_job([""], other)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "tack.sourcehut.manifest: required"),
        ({"manifest": "image: [unclosed\n"}, "tack.sourcehut.manifest: invalid YAML"),
        ({"manifest": "just text"}, "tack.sourcehut.manifest: must be a mapping"),
        ({"manifest": "  "}, "tack.sourcehut.manifest: empty"),
        ({"manifest": "image: alpine/edge\n"}, "tack.sourcehut.manifest.tasks: required"),
        ({"manifest": "image: alpine/edge\ntasks: []\n"}, "tack.sourcehut.manifest.tasks: required"),
        ({"manifest": "tasks:\n  - a: b\n"}, "tack.sourcehut.manifest.image: required"),
        (
            {"manifest": "image: a\ntasks:\n  - Build_It: make\n"},
            "tack.sourcehut.manifest.tasks[0]: task name 'Build_It'",
        ),
        (
            {"manifest": "image: a\ntasks:\n  - a: x\n    b: y\n"},
            "tasks[0]: each task must be a mapping of one",
        ),
        ({"manifest": "image: a\ntasks:\n  - a: x\n  - a: y\n"}, "tasks[1]: task 'a' appears twice"),
        ({"manifest": "image: a\ntasks:\n  - a: [1]\n"}, "tasks[0].a: the script must be a string"),
        ({"manifest": "image: a\nimage: b\ntasks:\n  - a: x\n"}, "duplicate key 'image'"),
        ({"manifest": "image: a\nflavour: x\ntasks:\n  - a: x\n"}, "manifest.flavour: not a manifest key"),
        (
            {"manifest": "image: a\nenvironment: [x]\ntasks:\n  - a: x\n"},
            "manifest.environment: must be a mapping",
        ),
        (
            {"manifest": "image: a\nsources: x\ntasks:\n  - a: x\n"},
            "manifest.sources: must be a list of strings",
        ),
        ({"manifest": "image: a\n" + "#" * MAX_MANIFEST_BYTES + "\ntasks:\n  - a: x\n"}, "larger than"),
        ({"manifest": BOMB}, "manifest: expands to more than 20000 values"),
        (
            {"manifest": "image: a\nrepositories: &r {x: *r}\ntasks:\n  - a: b\n"},
            "manifest: nested deeper than 64 levels (recursive YAML aliases?)",
        ),
        (
            {"manifest": "image: a\nrepositories: {x: 0x" + "f" * 6000 + "}\ntasks:\n  - a: b\n"},
            "manifest: an integer is larger than 1024 bits",
        ),
        ({"manifest": MANIFEST, "color": "red"}, "tack.sourcehut.color: unknown key"),
        ({"manifest": MANIFEST, "tags": ["a b"]}, "tack.sourcehut.tags: 'a b' must be"),
        ({"manifest": MANIFEST, "tags": ["tack"]}, "tack.sourcehut.tags: 'tack': 'tack' and 'tack-*' tags"),
        ({"manifest": MANIFEST, "tags": ["tack-" + "0" * 32]}, "'tack-*' tags are set by tack"),
        (
            {"manifest": "image: a\nenvironment:\n  TANGLED_COMMIT: x\ntasks:\n  - a: x\n"},
            "manifest.environment.TANGLED_COMMIT: TANGLED_* variables are set by tack",
        ),
        ({"manifest": MANIFEST, "visibility": "SECRET"}, "tack.sourcehut.visibility: must be one of"),
        ({"manifest": MANIFEST, "secrets": "yes"}, "tack.sourcehut.secrets: must be true or false"),
    ],
)
def test_bad_configs_and_manifests_are_refused_naming_the_problem(
    config: dict[str, Any], message: str
) -> None:
    """Not YAML, not a mapping, no tasks, bad task names, unknown keys, too big: InvalidArgument says which."""
    with pytest.raises(InvalidArgument) as caught:
        job(config)
    assert message in str(caught.value)


def test_a_manifests_aliases_are_written_out_in_what_is_submitted() -> None:
    """Anchors and aliases the user wrote reach builds.sr.ht expanded, so the size check counts what it parses."""
    text = "image: a\npackages: &p [go, make]\nenvironment:\n  TOOLS: *p\ntasks:\n  - a: b\n"
    submitted = job({"manifest": text}).manifest
    assert "&" not in submitted and "*" not in submitted
    assert yaml.safe_load(submitted)["environment"]["TOOLS"] == ["go", "make"]


def test_config_json_that_is_not_json_is_refused() -> None:
    """A malformed config_json names config_json."""
    with pytest.raises(InvalidArgument, match="config_json: not JSON"):
        parse_json("{")
    assert parse_json(json.dumps({"manifest": MANIFEST})).manifest.task_names == ["build", "test"]


def untrusted_request() -> pb.SpawnRequest:
    request = spawn_request([workflow()])
    request.untrusted = True
    request.trigger.source_repo_did = "did:plc:fork"
    request.trigger.source_knot = "fork.knot"
    return request


def test_untrusted_runs_are_refused_unless_the_operator_allows_them() -> None:
    """A fork's run is refused without TACK_SOURCEHUT_UNTRUSTED, with the shared wording."""
    with pytest.raises(InvalidArgument) as caught:
        job({"manifest": MANIFEST}, untrusted_request())
    assert str(caught.value).startswith(UNTRUSTED_REFUSED)
    assert "TACK_SOURCEHUT_UNTRUSTED" in str(caught.value)


def test_allowed_untrusted_runs_go_without_secrets_and_clone_the_fork() -> None:
    """Secrets are off whatever the workflow says; secrets:, oauth:, triggers: and artifacts: (acting or
    publishing in the account's name) are refused; the fork is the source."""
    submitted = job({"manifest": MANIFEST, "secrets": True}, untrusted_request(), untrusted=True)
    assert submitted.secrets is False
    manifest = yaml.safe_load(submitted.manifest)
    assert manifest["sources"] == ["https://fork.knot/did:plc:fork#" + "a" * 40]
    assert manifest["environment"]["TANGLED_UNTRUSTED"] == "true"
    for key, value in (
        ("secrets", "\nsecrets: [0b0e8a0c-1111-2222-3333-444455556666]\n"),
        ("oauth", "\noauth: x\n"),
        ("triggers", "\ntriggers:\n  - {action: email, condition: always, to: a@example.org}\n"),
        ("artifacts", "\nartifacts: [out.tar]\n"),
    ):
        with pytest.raises(InvalidArgument, match=f"tack.sourcehut.manifest.{key}: an untrusted run"):
            job({"manifest": MANIFEST + value}, untrusted_request(), untrusted=True)


def test_settings_need_a_token_and_read_the_instance_and_pacing() -> None:
    """TACK_SOURCEHUT_TOKEN is required and kept out of repr; the instance must be an http(s) URL."""
    with pytest.raises(ConfigError, match="TACK_SOURCEHUT_TOKEN is required"):
        Settings.from_env({})
    settings = Settings.from_env(
        {
            "TACK_SOURCEHUT_TOKEN": "secret-token",
            "TACK_SOURCEHUT_INSTANCE": "https://builds.example.org/",
            "TACK_SOURCEHUT_POLL_INTERVAL": "2.5",
            "TACK_SOURCEHUT_UNTRUSTED": "true",
        }
    )
    assert settings.instance == "https://builds.example.org"
    assert settings.poll_interval == 2.5 and settings.untrusted
    assert "secret-token" not in repr(settings)
    with pytest.raises(ConfigError, match="TACK_SOURCEHUT_INSTANCE must be an http"):
        Settings.from_env({"TACK_SOURCEHUT_TOKEN": "t", "TACK_SOURCEHUT_INSTANCE": "builds.sr.ht"})
