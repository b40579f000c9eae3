"""The provider's settings, read from ``TACK_TEKTON_*`` environment variables (docs/tekton-api.md §1)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tack_common import env
from tack_common.env import ConfigError
from tack_provider_tekton.workflow_config import DNS_SUBDOMAIN


SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Settings:
    """Where the cluster is and how long to wait for it."""

    namespace: str
    kubeconfig: str | None = None
    """A kubeconfig file; None: in-cluster configuration (the pod's service account)."""
    request_timeout: float = 30.0
    watch_timeout: float = 300.0
    """Seconds the API server keeps one watch open before it is reopened from the last version seen."""
    log_poll_interval: float = 1.0
    """Seconds between reads of a running PipelineRun's TaskRuns while someone watches its log."""
    untrusted_pipelines: frozenset[str] = frozenset()
    """Pipelines the operator lets build untrusted runs (a fork's pull request run through Run CI)."""

    @classmethod
    def from_env(cls, e: Mapping[str, str], service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> Settings:
        """Validate the environment; ConfigError names the variable at fault."""
        kubeconfig = e.get("TACK_TEKTON_KUBECONFIG", "").strip() or None
        if kubeconfig is not None and not os.path.isfile(kubeconfig):
            raise ConfigError(f"TACK_TEKTON_KUBECONFIG names no readable file: {kubeconfig!r}")
        in_cluster = bool(e.get("KUBERNETES_SERVICE_HOST")) and (service_account_dir / "token").is_file()
        if kubeconfig is None and not in_cluster:
            raise ConfigError(
                "TACK_TEKTON_KUBECONFIG is required outside a Kubernetes pod"
                " (in a pod the service account's token and CA are used)"
            )
        namespace = e.get("TACK_TEKTON_NAMESPACE", "").strip()
        if not namespace and in_cluster and (service_account_dir / "namespace").is_file():
            namespace = (service_account_dir / "namespace").read_text().strip()
        if not namespace:
            raise ConfigError("TACK_TEKTON_NAMESPACE is required but not set")
        if DNS_LABEL.fullmatch(namespace) is None:
            raise ConfigError(f"TACK_TEKTON_NAMESPACE must be a Kubernetes namespace name, got {namespace!r}")
        return cls(
            namespace=namespace,
            kubeconfig=kubeconfig,
            request_timeout=env.number(e, "TACK_TEKTON_REQUEST_TIMEOUT", 30.0, 1.0, 600.0),
            watch_timeout=env.number(e, "TACK_TEKTON_WATCH_TIMEOUT", 300.0, 1.0, 3600.0),
            log_poll_interval=env.number(e, "TACK_TEKTON_LOG_POLL_INTERVAL", 1.0, 0.05, 60.0),
            untrusted_pipelines=_pipeline_names(e),
        )


def _pipeline_names(e: Mapping[str, str]) -> frozenset[str]:
    """TACK_TEKTON_UNTRUSTED_PIPELINES: Pipeline names in the namespace, comma-separated."""
    names: set[str] = set()
    for item in e.get("TACK_TEKTON_UNTRUSTED_PIPELINES", "").split(","):
        name = item.strip()
        if not name:
            continue
        if DNS_SUBDOMAIN.fullmatch(name) is None:
            raise ConfigError(f"TACK_TEKTON_UNTRUSTED_PIPELINES entries must be Pipeline names, got {name!r}")
        names.add(name)
    return frozenset(names)
