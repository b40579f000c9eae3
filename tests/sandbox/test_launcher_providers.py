"""`make run` starts the providers that are configured: the stub always, Buildkite and Tekton when their variables are set."""

from __future__ import annotations

from pathlib import Path

from tack_sandbox.launcher import Launcher


def test_tekton_is_started_when_configured(tmp_path: Path) -> None:
    """With TACK_TEKTON_KUBECONFIG set, the launcher runs tack_provider_tekton on 7104 and routes `tekton` to it."""
    launcher = Launcher(
        {"TACK_DATA_DIR": str(tmp_path), "TACK_TEKTON_KUBECONFIG": str(tmp_path / "kubeconfig")}
    )
    providers, children = launcher._providers()
    assert providers == "stub=127.0.0.1:7102,tekton=127.0.0.1:7104"
    [tekton] = [c for c in children if c.name == "tekton"]
    assert tekton.module == "tack_provider_tekton"
    assert tekton.env["TACK_TEKTON_DB_PATH"].endswith("tekton.db")


def test_without_configuration_only_the_stub_runs(tmp_path: Path) -> None:
    """No provider variables: the stub alone."""
    providers, children = Launcher({"TACK_DATA_DIR": str(tmp_path)})._providers()
    assert providers == "stub=127.0.0.1:7102"
    assert [c.name for c in children] == ["stub"]
