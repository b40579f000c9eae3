"""Whether the provider can work in its namespace: the Tekton v1 API is served and RBAC grants every verb
the provider uses (docs/tekton-api.md §8-§9). Used at start and by ``tack doctor``."""

from __future__ import annotations

from dataclasses import dataclass

from tack_provider_tekton.kube import Kube, KubeError


@dataclass(frozen=True)
class Permission:
    """Verbs on one resource (``group`` "" is the core API)."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    subresource: str = ""

    @property
    def label(self) -> str:
        """``pipelineruns.tekton.dev``, ``pods/log``."""
        name = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{name}.{self.group}" if self.group else name


PERMISSIONS = (
    Permission("tekton.dev", "pipelineruns", ("create", "get", "list", "watch", "patch")),
    Permission("tekton.dev", "pipelines", ("get",)),
    Permission("tekton.dev", "taskruns", ("list",)),
    Permission("", "pods", ("get",)),
    Permission("", "pods", ("get",), "log"),
)
PROBE_PIPELINE = "tack-access-check"


async def problems(kube: Kube) -> list[str]:
    """What stops the provider from working (empty when nothing); Unreachable when the cluster does not answer."""
    found = []
    try:
        await kube.get_pipeline(PROBE_PIPELINE)
    except KubeError as exc:
        if exc.status == 401:
            return [f"the cluster refused the credentials (HTTP 401: {exc.message})"]
        if exc.status == 404 and "could not find the requested resource" in exc.message:
            found.append(
                "the Tekton v1 API (pipelines.tekton.dev/v1) is not served: is Tekton Pipelines installed?"
            )
        elif exc.status not in (403, 404):
            raise
    for permission in PERMISSIONS:
        for verb in permission.verbs:
            if not await kube.allowed(verb, permission.resource, permission.group, permission.subresource):
                found.append(f"may not {verb} {permission.label} in namespace {kube.namespace}")
    return found
