"""`make run` and compose.yaml know the sourcehut provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tack_sandbox.launcher import Launcher


ROOT = Path(__file__).resolve().parents[2]


def test_make_run_starts_sourcehut_when_a_token_is_set(tmp_path: Path) -> None:
    """With TACK_SOURCEHUT_TOKEN set the launcher runs tack_provider_sourcehut on 7105 and routes `sourcehut`
    to it; without it, it does not (there is no builds.sr.ht to talk to)."""
    launcher = Launcher({"TACK_DATA_DIR": str(tmp_path), "TACK_SOURCEHUT_TOKEN": "t" * 40})
    providers, children = launcher._providers()
    assert providers == "stub=127.0.0.1:7102,sourcehut=127.0.0.1:7105"
    [sourcehut] = [c for c in children if c.name == "sourcehut"]
    assert sourcehut.module == "tack_provider_sourcehut"
    assert sourcehut.env["TACK_SOURCEHUT_DB_PATH"].endswith("sourcehut.db")
    _, without = Launcher({"TACK_DATA_DIR": str(tmp_path)})._providers()
    assert "sourcehut" not in [c.name for c in without]


def test_compose_has_a_sourcehut_sidecar_behind_its_profile() -> None:
    """compose.yaml's `sourcehut` service (profile `sourcehut`) runs the provider with its token and instance,
    a volume for its database and a health check on its gRPC port, on the private providers network."""
    services: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    service = services["sourcehut"]
    assert service["profiles"] == ["sourcehut"]
    assert service["command"] == ["python", "-m", "tack_provider_sourcehut"]
    assert {"TACK_SOURCEHUT_TOKEN", "TACK_SOURCEHUT_INSTANCE"} <= set(service["environment"])
    assert service["environment"]["TACK_SOURCEHUT_DB_PATH"].startswith("/data/")
    assert "providers" in service["networks"] and "ports" not in service
    assert service["healthcheck"]["test"][-1] == "127.0.0.1:7105"
    assert service["environment"]["TACK_SOURCEHUT_LISTEN_ADDR"].endswith(":7105")
