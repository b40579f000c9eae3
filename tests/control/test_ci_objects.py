"""Pipelines as sh.tangled.ci.pipeline objects, against production answers (tack_control.web.ci.objects)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tack_control.web.ci.objects import PipelineRow, WorkflowRow, pipeline_object, workflow_object
from tests.fakes.appview import parse_rfc3339
from tests.fakes.ci_appview import swift_decode_pipeline
from tests.support.lexicon import Invalid, Lexicons


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "swift"
PAGE = json.loads((FIXTURES / "pipeline-page.json").read_text())
ONE = json.loads((FIXTURES / "pipeline.json").read_text())
STATUS_ORDER = ("pending", "running", "success", "failed", "timeout", "cancelled")


def _ns(text: str) -> int:
    value = parse_rfc3339(text)
    assert value is not None
    return value


def _s(text: str | None) -> int:
    return 0 if text is None else _ns(text) // 1_000_000_000


def _rows(fixture: dict[str, Any]) -> tuple[PipelineRow, list[WorkflowRow]]:
    """What tack would have stored for the pipeline a production spindle answered with ``fixture``."""
    trigger = dict(fixture["trigger"])
    kind = {"push": "push", "pullRequest": "pull_request", "manual": "manual"}[
        trigger.pop("$type").split("#")[1]
    ]
    detail_key = {"push": "push", "pull_request": "pullRequest", "manual": "manual"}[kind]
    meta = {"kind": kind, detail_key: trigger, "repo": {"repoDid": fixture["repo"]}}
    row = PipelineRow(
        knot="knot.example.com",
        rkey=fixture["id"],
        created_ns=_ns(fixture.get("createdAt", "2026-07-22T08:35:09+03:00")),
        repo_did=fixture["repo"],
        source_repo=fixture.get("sourceRepo", ""),
        kind=kind,
        commit=fixture["commit"],
        trigger=meta,
    )
    workflows = [
        WorkflowRow(
            w["name"], w["status"], w.get("error", ""), _s(w.get("startedAt")), _s(w.get("finishedAt"))
        )
        for w in fixture["workflows"]
    ]
    return row, workflows


def _instants(obj: Any) -> Any:
    """``obj`` with every RFC 3339 time replaced by its instant (offsets differ, instants must not)."""
    if isinstance(obj, dict):
        return {
            k: _ns(v) if k in ("createdAt", "startedAt", "finishedAt") else _instants(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_instants(v) for v in obj]
    return obj


@pytest.mark.parametrize(
    "fixture", [*PAGE["pipelines"], ONE], ids=lambda f: f["trigger"]["$type"].split("#")[1]
)
def test_tack_answers_what_the_production_spindle_answered_for_the_same_pipeline(
    fixture: dict[str, Any],
) -> None:
    """From the facts behind each production answer, tack builds the same object (times as instants), in UTC."""
    ours = pipeline_object(*_rows(fixture))
    if "createdAt" not in fixture:
        del ours["createdAt"]
    assert _instants(ours) == _instants(fixture)
    assert swift_decode_pipeline(ours).keys() == swift_decode_pipeline(fixture).keys()
    assert ours["trigger"]["$type"] == fixture["trigger"]["$type"]
    assert all(v.endswith("Z") for k, v in ours.items() if k == "createdAt")


def test_production_fixtures_and_tack_objects_validate_against_the_lexicons() -> None:
    """The lexicon validator accepts the production answers (so it checks what production sends) and tack's."""
    lexicons = Lexicons()
    lexicons.output("sh.tangled.ci.queryPipelines", PAGE)
    lexicons.output("sh.tangled.ci.getPipeline", ONE)
    for fixture in PAGE["pipelines"]:
        lexicons.validate(pipeline_object(*_rows(fixture)), "sh.tangled.ci.pipeline")
    with pytest.raises(Invalid):
        lexicons.output("sh.tangled.ci.queryPipelines", {**PAGE, "pipelines": None})


def _row(kind: str, meta: dict[str, Any], commit: str = "a" * 40, source: str = "") -> PipelineRow:
    return PipelineRow(
        "k", "3mr7m2f6ger22", 1_784_698_509_603_192_451, "did:plc:r", source, kind, commit, meta
    )


def test_a_push_without_its_previous_commit_shows_the_null_commit() -> None:
    """A recovered push (old SHA unknown) still has a 40-character oldSha: git's null commit."""
    trigger = pipeline_object(_row("push", {"push": {"ref": "refs/heads/main", "oldSha": ""}}), [])["trigger"]
    assert trigger == {
        "$type": "sh.tangled.ci.trigger#push",
        "ref": "refs/heads/main",
        "newSha": "a" * 40,
        "oldSha": "0" * 40,
    }


def test_a_trigger_whose_details_are_missing_or_unknown_still_answers() -> None:
    """Unreadable trigger metadata never breaks the answer: the columns fill in, an unknown kind shows as manual."""
    assert pipeline_object(_row("pull_request", {}), [])["trigger"] == {
        "$type": "sh.tangled.ci.trigger#pullRequest",
        "targetBranch": "",
        "sourceSha": "a" * 40,
        "sourceBranch": "",
    }
    assert pipeline_object(_row("", {"kind": "tag"}), [])["trigger"] == {
        "$type": "sh.tangled.ci.trigger#manual",
        "sha": "a" * 40,
    }
    legacy_action = {"pullRequest": {"action": "create", "targetBranch": "main", "sourceBranch": "f"}}
    assert "action" not in pipeline_object(_row("pull_request", legacy_action), [])["trigger"]


def test_source_repo_is_top_level_only_when_it_differs_from_the_repo() -> None:
    """sourceRepo names a fork; the repo itself is not repeated as its own source."""
    assert "sourceRepo" not in pipeline_object(_row("manual", {}, source="did:plc:r"), [])
    assert pipeline_object(_row("manual", {}, source="did:plc:fork"), [])["sourceRepo"] == "did:plc:fork"


@pytest.mark.parametrize("status", ["", *STATUS_ORDER])
def test_workflow_objects_carry_status_times_and_the_error_of_a_failure(status: str) -> None:
    """An unpublished status reads pending; times are whole-second UTC; error only with an unsuccessful end."""
    row = WorkflowRow("build.yml", status, "exit 1", 1_784_698_510, 1_784_698_570 if status else 0)
    got = workflow_object(row)
    assert got["id"] == got["name"] == "build.yml"
    assert got["status"] == (status or "pending")
    assert got["startedAt"] == "2026-07-22T05:35:10Z"
    assert got.get("finishedAt") == ("2026-07-22T05:36:10Z" if status else None)
    assert ("error" in got) == (status in ("failed", "timeout", "cancelled"))
