"""The Tekton provider's environment: kubeconfig or in-cluster, and the namespace (docs/tekton-api.md §1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tack_common.env import ConfigError
from tack_provider_tekton.config import Settings


def service_account(tmp_path: Path, namespace: str = "builds") -> Path:
    folder = tmp_path / "sa"
    folder.mkdir()
    (folder / "token").write_text("t")
    (folder / "namespace").write_text(namespace + "\n")
    return folder


def test_in_a_pod_the_service_accounts_namespace_is_the_default(tmp_path: Path) -> None:
    """In-cluster (KUBERNETES_SERVICE_HOST and a mounted token), the pod's namespace is used unless set."""
    folder = service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert Settings.from_env(env, folder) == Settings(namespace="builds")
    assert Settings.from_env({**env, "TACK_TEKTON_NAMESPACE": "ci"}, folder).namespace == "ci"


def test_outside_a_pod_a_kubeconfig_and_a_namespace_are_required(tmp_path: Path) -> None:
    """Without the mount, TACK_TEKTON_KUBECONFIG and TACK_TEKTON_NAMESPACE are needed, and the file must exist."""
    nowhere = tmp_path / "none"
    with pytest.raises(ConfigError, match="TACK_TEKTON_KUBECONFIG is required"):
        Settings.from_env({}, nowhere)
    with pytest.raises(ConfigError, match="TACK_TEKTON_KUBECONFIG names no readable file"):
        Settings.from_env({"TACK_TEKTON_KUBECONFIG": str(nowhere)}, nowhere)
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\n")
    with pytest.raises(ConfigError, match="TACK_TEKTON_NAMESPACE is required"):
        Settings.from_env({"TACK_TEKTON_KUBECONFIG": str(config)}, nowhere)
    settings = Settings.from_env(
        {
            "TACK_TEKTON_KUBECONFIG": str(config),
            "TACK_TEKTON_NAMESPACE": "ci",
            "TACK_TEKTON_WATCH_TIMEOUT": "60",
        },
        nowhere,
    )
    assert (settings.kubeconfig, settings.namespace, settings.watch_timeout) == (str(config), "ci", 60.0)


def test_a_namespace_must_be_a_dns_label(tmp_path: Path) -> None:
    """A malformed namespace stops the provider at start, naming the variable."""
    with pytest.raises(ConfigError, match="TACK_TEKTON_NAMESPACE must be"):
        Settings.from_env(
            {"KUBERNETES_SERVICE_HOST": "h", "TACK_TEKTON_NAMESPACE": "CI_Builds"}, service_account(tmp_path)
        )


def test_untrusted_pipelines_are_a_list_of_pipeline_names(tmp_path: Path) -> None:
    """TACK_TEKTON_UNTRUSTED_PIPELINES is comma-separated Pipeline names; blanks are ignored, bad names refused."""
    env = {"KUBERNETES_SERVICE_HOST": "h"}
    folder = service_account(tmp_path)
    listed = Settings.from_env({**env, "TACK_TEKTON_UNTRUSTED_PIPELINES": " forks, sandbox-ci ,"}, folder)
    assert listed.untrusted_pipelines == frozenset({"forks", "sandbox-ci"})
    assert Settings.from_env(env, folder).untrusted_pipelines == frozenset()
    with pytest.raises(ConfigError, match="TACK_TEKTON_UNTRUSTED_PIPELINES entries must be Pipeline names"):
        Settings.from_env({**env, "TACK_TEKTON_UNTRUSTED_PIPELINES": "ok, Not OK"}, folder)
