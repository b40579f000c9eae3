"""The Tekton provider as a real process against the fake Kubernetes API server, for tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tack_common.pb import provider_pb2 as pb
from tests.fakes.kubernetes import FakeKubernetes, PipelineScript, StepScript, TaskScript
from tests.support.procs import ProviderProcess


FAST_ENV = {
    "TACK_TEKTON_LOG_POLL_INTERVAL": "0.1",
    "TACK_TEKTON_REQUEST_TIMEOUT": "3",
    "TACK_TEKTON_WATCH_TIMEOUT": "30",
}

PIPELINES = {
    "build": PipelineScript(
        tasks=[
            TaskScript(
                "compile", [StepScript("fetch", ["cloning", "done"]), StepScript("make", ["cc main.c", "ok"])]
            ),
            TaskScript("test", [StepScript("unit", ["4 passed"], seconds=0.2)]),
        ]
    ),
    "lint": PipelineScript(
        tasks=[TaskScript("lint", [StepScript("ruff", ["E501 line too long"], exit_code=2)])]
    ),
    "slow": PipelineScript(tasks=[TaskScript("wait", [StepScript("sleep", ["tick"] * 10, seconds=3.0)])]),
    "forever": PipelineScript(tasks=[TaskScript("serve", [StepScript("loop", ["started"], hang=True)])]),
    "held": PipelineScript(tasks=[TaskScript("never", [StepScript("x")])], held=True),
    "too-long": PipelineScript(
        tasks=[TaskScript("deploy", [StepScript("push", ["pushing"], hang=True)], timeout=True)]
    ),
    "overdue": PipelineScript(
        tasks=[TaskScript("all", [StepScript("work", ["working"], hang=True)])], pipeline_timeout=True
    ),
}


async def fake_kubernetes(**knobs: Any) -> FakeKubernetes:
    """A started fake with the standard pipelines."""
    fake = FakeKubernetes(**knobs)
    await fake.start()
    for name, script in PIPELINES.items():
        fake.add_pipeline(name, script)
    return fake


class TektonProcess(ProviderProcess):
    """``python -m tack_provider_tekton`` on free ports, reaching ``fake`` through a kubeconfig."""

    def __init__(
        self, workdir: Path, fake: FakeKubernetes, extra_env: Mapping[str, str] | None = None
    ) -> None:
        kubeconfig = fake.kubeconfig(workdir / "kubeconfig")
        env = {
            "TACK_TEKTON_KUBECONFIG": str(kubeconfig),
            "TACK_TEKTON_NAMESPACE": "ci",
            **FAST_ENV,
            **(extra_env or {}),
        }
        super().__init__(workdir, "tack_provider_tekton", "TACK_TEKTON", "tekton", env)


def tekton_workflow(name: str, pipeline: str, **config: Any) -> pb.Workflow:
    """A workflow routed to the Tekton provider."""
    return pb.Workflow(
        name=name,
        engine="tack",
        raw="engine: tack\n",
        config_json=json.dumps({"pipeline": pipeline, **config}),
    )
