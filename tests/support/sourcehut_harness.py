"""The sourcehut provider as a real process against the fake builds.sr.ht, for tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tack_common.pb import provider_pb2 as pb
from tests.fakes.sourcehut import DEFAULT_TOKEN, FakeSourcehut, Job, JobPlan
from tests.support.procs import ProviderProcess


FAST_ENV = {
    "TACK_SOURCEHUT_POLL_INTERVAL": "0.2",
    "TACK_SOURCEHUT_LOG_POLL_INTERVAL": "0.1",
    "TACK_SOURCEHUT_REQUEST_TIMEOUT": "5",
    "TACK_SOURCEHUT_SUBMIT_TIMEOUT": "2",
    "TACK_SOURCEHUT_API_BUDGET": "6000",
}


def manifest(*tasks: str, image: str = "alpine/edge") -> str:
    """A manifest running ``tasks`` (each ``echo <name>``)."""
    lines = [f"image: {image}", "tasks:"]
    lines += [f"  - {name}: echo {name}" for name in tasks]
    return "\n".join(lines) + "\n"


def plan_for(job: Job) -> JobPlan | None:
    """How the fake runs a job, by its image and task names: image ``held`` stays pending; a task named
    ``fail`` fails, ``hang`` runs until cancelled, ``slow`` times the job out."""
    if job.image == "held":
        return JobPlan(pick_up=False)
    names = {task.name for task in job.tasks}
    return JobPlan(
        fail_task="fail" if "fail" in names else None,
        hang_task="hang" if "hang" in names else None,
        timeout_at="slow" if "slow" in names else None,
    )


async def submit(
    fake: FakeSourcehut, manifest_text: str, token: str = DEFAULT_TOKEN, tags: list[str] | None = None
) -> int:
    """Submit a job to ``fake`` as a user would (a bare GraphQL POST); returns its id."""
    body = {
        "query": "mutation($m: String!, $t: [String!]) { submit(manifest: $m, tags: $t) { id } }",
        "variables": {"m": manifest_text, "t": tags},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.url}/query", json=body, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        answer = await resp.json()
    assert resp.status == 200 and "errors" not in answer, answer
    return int(answer["data"]["submit"]["id"])


async def fake_sourcehut(**knobs: Any) -> FakeSourcehut:
    """A started fake that runs jobs by :func:`plan_for`."""
    fake = FakeSourcehut(**knobs)
    await fake.start()
    fake.autorun(plan_for, tick=0.05)
    return fake


class SourcehutProcess(ProviderProcess):
    """``python -m tack_provider_sourcehut`` on free ports, against ``fake``."""

    def __init__(
        self, workdir: Path, fake: FakeSourcehut, extra_env: Mapping[str, str] | None = None
    ) -> None:
        env = {
            "TACK_SOURCEHUT_TOKEN": DEFAULT_TOKEN,
            "TACK_SOURCEHUT_INSTANCE": fake.url,
            **FAST_ENV,
            **(extra_env or {}),
        }
        super().__init__(workdir, "tack_provider_sourcehut", "TACK_SOURCEHUT", "sourcehut", env)


def sourcehut_workflow(name: str, manifest_text: str, **config: Any) -> pb.Workflow:
    """A workflow routed to the sourcehut provider."""
    return pb.Workflow(
        name=name,
        engine="tack",
        raw="engine: tack\n",
        config_json=json.dumps({"manifest": manifest_text, **config}),
    )
