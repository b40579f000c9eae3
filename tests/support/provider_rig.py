"""A provider process against a fake of its CI, as the tests that fail its supervised tasks on purpose
(TACK_FAULT_INJECTION) see it: its gRPC health, its log of task failures and its restart counts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, Protocol, TypeVar

import grpc

from tack_common import client, health
from tack_common.pb import provider_pb2 as pb
from tests.support.faults import metric
from tests.support.procs import ProviderProcess


class Fake(Protocol):
    async def stop(self) -> None: ...


F = TypeVar("F", bound=Fake)
P = TypeVar("P", bound=ProviderProcess)
R = TypeVar("R", bound="ProviderRig")  # type: ignore[type-arg]


class ProviderRig(Generic[F, P]):
    """The provider ``proc`` serving against ``fake``, with a gRPC channel to it."""

    def __init__(self, fake: F, proc: P) -> None:
        self.fake = fake
        self.proc = proc
        self.base = f"http://127.0.0.1:{proc.metrics_port}"
        self.channel = client.channel(proc.address)
        self.stub = client.provider_stub(self.channel)

    async def serving(self) -> bool:
        """Whether gRPC health says SERVING (False when it cannot be asked)."""
        try:
            return await health.check(self.channel, timeout=2) == health.SERVING
        except grpc.aio.AioRpcError:
            return False

    async def not_serving(self) -> bool:
        """Whether gRPC health does not say SERVING."""
        return not await self.serving()

    def logged(self, kind: str) -> bool:
        """Whether the provider logged a failure of a task of ``kind`` with the injected fault."""
        for line in self.proc.output().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("msg", "").startswith("supervised task failed") and record.get("kind") == kind:
                    return "InjectedFault" in record.get("exc", "")
        return False

    async def restarts(self, kind: str) -> float:
        """How often tasks of ``kind`` were restarted."""
        return await metric(self.base, "tack_task_restarts_total", {"task": kind})


@asynccontextmanager
async def serving(make: Callable[[F, P], R], fake: F, proc: P) -> AsyncIterator[R]:
    """Start ``proc``, wait until it serves, and yield ``make(fake, proc)``; afterwards kill the process
    (SIGKILL), close the channel and stop the fake."""
    await proc.start_serving()
    rig = make(fake, proc)
    try:
        yield rig
    finally:
        proc.kill9()
        await rig.channel.close()
        await fake.stop()


def histories(updates: list[pb.StatusUpdate]) -> dict[str, list[int]]:
    """The statuses each workflow went through, in order."""
    out: dict[str, list[int]] = {}
    for update in updates:
        out.setdefault(update.key.workflow, []).append(update.status)
    return out
