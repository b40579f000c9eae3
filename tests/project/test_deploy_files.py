"""compose.yaml and the Dockerfile: valid, and every module and variable they name exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.support.codefacts import PACKAGES, ROOT, module_runs, reads_variable, source_text


pytestmark = pytest.mark.e2e


REQUIRED = {
    "TACK_HOSTNAME": "spindle.example.com",
    "TACK_OWNER_DID": "did:plc:example",
    "TACK_BUILDKITE_TOKEN": "token",
    "TACK_BUILDKITE_ORG": "acme",
    "TACK_BUILDKITE_WEBHOOK_SECRET": "secret",
}


def compose() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def run_compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is not installed; `make test` installs Debian's docker-compose"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TACK_")}
    return subprocess.run(
        [tool, "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_compose_validates() -> None:
    """docker-compose accepts compose.yaml when the required variables are set."""
    result = run_compose_config(REQUIRED)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_names_each_missing_required_variable(missing: str) -> None:
    """Leaving out a required variable fails validation with a message naming it."""
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    result = run_compose_config(env)
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def test_every_service_runs_an_existing_module() -> None:
    """Each service's `python -m` module (and health-check module) exists with a __main__."""
    modules = set()
    for service in compose()["services"].values():  # type: ignore[attr-defined]
        for command in (service["command"], service["healthcheck"]["test"]):
            if "-m" in command:
                modules.add(command[command.index("-m") + 1])
    assert modules >= {
        "tack_control",
        "tack_provider_buildkite",
        "tack_provider_stub",
        "tack_provider_kit.healthcheck",
    }
    assert [m for m in sorted(modules) if not module_runs(m)] == []


def test_every_variable_in_compose_is_read_by_the_code() -> None:
    """No TACK_* variable in compose.yaml is a typo: the code reads each one."""
    names = set(re.findall(r"\bTACK_[A-Z_]+\b", (ROOT / "compose.yaml").read_text())) - {"TACK_PUBLISH"}
    code = source_text()
    unknown = sorted(name for name in names if not reads_variable(name, code))
    assert unknown == []


def test_only_the_control_plane_is_published_and_providers_reach_only_what_they_must() -> None:
    """The control plane alone publishes a port; the stub sits on the internal network only, and providers of
    outside CIs (Buildkite, Kubernetes, builds.sr.ht) also join the outbound network to reach their API."""
    doc = compose()
    services = doc["services"]
    assert isinstance(services, dict)
    assert [name for name, s in services.items() if "ports" in s] == ["control"]
    assert doc["networks"]["providers"]["internal"] is True  # type: ignore[index]
    assert not doc["networks"]["public"]  # type: ignore[index]
    assert services["stub"]["networks"] == ["providers"]
    for name in ("buildkite", "tekton", "sourcehut"):
        assert sorted(services[name]["networks"]) == ["providers", "public"], name
    for name in ("buildkite", "stub", "tekton", "sourcehut"):
        assert services[name]["restart"] == "unless-stopped"


def test_image_runs_as_non_root_and_copies_every_package() -> None:
    """The Dockerfile ends as a non-root user and installs every package."""
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    for pkg in PACKAGES:
        assert f"COPY {pkg} ./{pkg}" in text
