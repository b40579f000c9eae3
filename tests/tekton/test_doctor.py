"""`tack doctor` checks the Tekton provider's cluster access when it is configured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tack_control.doctor import check_tekton
from tests.support.tekton_harness import fake_kubernetes


pytestmark = pytest.mark.e2e


def env_for(kubeconfig: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TACK_")}
    return {**base, "TACK_TEKTON_KUBECONFIG": str(kubeconfig), "TACK_TEKTON_NAMESPACE": "ci"}


async def test_granted_access_passes_and_missing_verbs_are_named(tmp_path: Path) -> None:
    """A service account with every permission passes; one without `watch` fails naming it, with the fix."""
    fake = await fake_kubernetes()
    try:
        result = await check_tekton(env_for(fake.kubeconfig(tmp_path / "kubeconfig")))
        assert (result.verdict, result.detail) == (
            "ok",
            "Tekton v1 served in namespace ci; all 9 permissions granted",
        )
        fake.knobs["deny"] = {("watch", "pipelineruns"), ("get", "pods/log")}
        result = await check_tekton(env_for(tmp_path / "kubeconfig"))
        assert result.verdict == "FAIL"
        assert "may not watch pipelineruns.tekton.dev in namespace ci" in result.detail
        assert "may not get pods/log in namespace ci" in result.detail
        assert "rbac.yaml" in result.fix
        fake.knobs["tekton_installed"] = False
        fake.knobs["deny"] = set()
        result = await check_tekton(env_for(tmp_path / "kubeconfig"))
        assert "is Tekton Pipelines installed?" in result.detail
    finally:
        await fake.stop()


async def test_a_wrong_token_and_no_configuration(tmp_path: Path) -> None:
    """A token the cluster refuses fails; without Tekton variables the check is skipped."""
    fake = await fake_kubernetes()
    try:
        path = fake.kubeconfig(tmp_path / "kubeconfig")
        path.write_text(path.read_text().replace(fake.token, "wrong"))
        result = await check_tekton(env_for(path))
        assert result.verdict == "FAIL" and "refused the credentials (HTTP 401" in result.detail
    finally:
        await fake.stop()
    assert (await check_tekton({})).verdict == "skip"
