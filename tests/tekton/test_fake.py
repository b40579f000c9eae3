"""The fake Kubernetes API server keeps the documented contract (docs/tekton-api.md §10): create conflicts,
list and watch with resourceVersion, bookmarks and 410, merge patches, pod logs with follow."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.kubernetes import FakeKubernetes, PipelineScript, StepScript, TaskScript


RUNS = "/apis/tekton.dev/v1/namespaces/ci/pipelineruns"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes()
    await server.start()
    server.add_pipeline(
        "p", PipelineScript(tasks=[TaskScript("t", [StepScript("s", ["one", "two"], seconds=0.4)])])
    )
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def http(fake: FakeKubernetes) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {fake.token}"}
    async with aiohttp.ClientSession(fake.url, headers=headers) as session:
        yield session


def pipelinerun(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "labels": {"app": "x"}},
        "spec": {"pipelineRef": {"name": "p"}},
    }


async def events(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (await resp.read()).splitlines() if line.strip()]


async def test_create_conflicts_and_auth(fake: FakeKubernetes, http: aiohttp.ClientSession) -> None:
    """A second create of a name is 409 AlreadyExists; a request without the token is 401; both are Status objects."""
    async with http.post(RUNS, json=pipelinerun("a")) as resp:
        assert resp.status == 201
    async with http.post(RUNS, json=pipelinerun("a")) as resp:
        body = await resp.json()
        assert (resp.status, body["kind"], body["reason"]) == (409, "Status", "AlreadyExists")
    async with aiohttp.ClientSession(fake.url) as anonymous, anonymous.get(RUNS) as resp:
        assert resp.status == 401


async def test_watch_from_a_list_version_sees_every_later_change_then_bookmarks_and_ends(
    fake: FakeKubernetes, http: aiohttp.ClientSession
) -> None:
    """Watching from a list's resourceVersion replays what changed since, streams the controller's updates with
    increasing versions, sends bookmarks when allowed, and ends at timeoutSeconds."""
    async with http.get(RUNS, params={"labelSelector": "app=x"}) as resp:
        version = (await resp.json())["metadata"]["resourceVersion"]
    async with http.post(RUNS, json=pipelinerun("b")) as resp:
        assert resp.status == 201
    await fake.wait_for(lambda: "completionTime" in (fake.pipeline_run("b") or {}).get("status", {}))
    fake.knobs["bookmark_interval"] = 0.2
    query = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    async with http.get(RUNS, params={**query, "labelSelector": "app=x"}) as resp:
        got = await events(resp)
    kinds = [e["type"] for e in got]
    assert kinds[0] == "ADDED" and "MODIFIED" in kinds and "BOOKMARK" in kinds
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in got]
    assert versions == sorted(versions)
    final = [e for e in got if e["type"] == "MODIFIED"][-1]["object"]
    assert final["status"]["conditions"][0]["reason"] == "Succeeded"
    async with http.get(RUNS, params={**query, "labelSelector": "app=other"}) as resp:
        others = await events(resp)
    assert all(e["type"] == "BOOKMARK" for e in others), "the label selector lets other objects through"


async def test_a_compacted_version_is_gone(fake: FakeKubernetes, http: aiohttp.ClientSession) -> None:
    """After compaction, a watch from an older version gets an ERROR event with a 410 Status, or HTTP 410."""
    async with http.get(RUNS) as resp:
        version = (await resp.json())["metadata"]["resourceVersion"]
    async with http.post(RUNS, json=pipelinerun("c")) as resp:
        assert resp.status == 201
    fake.compact()
    async with http.get(RUNS, params={"watch": "1", "resourceVersion": version}) as resp:
        [event] = await events(resp)
    assert (event["type"], event["object"]["code"], event["object"]["reason"]) == ("ERROR", 410, "Expired")
    fake.knobs["gone_as_http"] = True
    async with http.get(RUNS, params={"watch": "1", "resourceVersion": version}) as resp:
        assert resp.status == 410


async def test_only_a_merge_patch_of_spec_status_is_taken(
    fake: FakeKubernetes, http: aiohttp.ClientSession
) -> None:
    """spec.status is set with a JSON merge patch; other media types are 415 and other spec fields 422."""
    async with http.post(RUNS, json=pipelinerun("d")) as resp:
        assert resp.status == 201
    merge = {"Content-Type": "application/merge-patch+json"}
    async with http.patch(f"{RUNS}/d", json={"spec": {"status": "Cancelled"}}) as resp:
        assert resp.status == 415
    async with http.patch(f"{RUNS}/d", data=json.dumps({"spec": {"params": []}}), headers=merge) as resp:
        assert resp.status == 422
    async with http.patch(
        f"{RUNS}/d", data=json.dumps({"spec": {"status": "Cancelled"}}), headers=merge
    ) as resp:
        assert resp.status == 200 and (await resp.json())["spec"]["status"] == "Cancelled"
    await fake.wait_for(lambda: "completionTime" in (fake.pipeline_run("d") or {}).get("status", {}))
    assert (fake.pipeline_run("d") or {})["status"]["conditions"][0]["reason"] == "Cancelled"


async def test_pod_logs_follow_until_the_container_ends(
    fake: FakeKubernetes, http: aiohttp.ClientSession
) -> None:
    """A follow read streams lines with RFC 3339 timestamps as they are written and ends with the container;
    a missing pod is 404."""
    async with http.post(RUNS, json=pipelinerun("e")) as resp:
        assert resp.status == 201
    log = "/api/v1/namespaces/ci/pods/e-t-pod/log"
    await fake.wait_for(lambda: fake.store.get("pods", "ci", "e-t-pod") is not None)
    while True:
        async with http.get(
            log, params={"container": "step-s", "follow": "true", "timestamps": "true"}
        ) as resp:
            if resp.status == 400:
                assert "waiting to start" in (await resp.json())["message"]
                await asyncio.sleep(0.01)
                continue
            text = (await resp.read()).decode()
            break
    lines = text.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["one", "two"]
    assert all(line.split(" ", 1)[0].endswith("Z") for line in lines)
    async with http.get("/api/v1/namespaces/ci/pods/nope/log", params={"container": "step-s"}) as resp:
        assert resp.status == 404
