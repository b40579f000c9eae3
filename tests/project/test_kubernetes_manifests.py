"""deploy/kubernetes: every manifest is valid against Kubernetes' schemas, RBAC grants exactly what the Tekton
provider uses, and the Deployment runs modules and variables that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tack_provider_tekton.access import PERMISSIONS
from tests.support.codefacts import ROOT, module_runs, reads_variable, source_text


DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37.0"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def every_document() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in documents(DEPLOY / name)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in every_document() if doc["kind"] == kind]


def test_the_kustomization_lists_every_manifest() -> None:
    """Each YAML file under deploy/kubernetes is applied by the kustomization."""
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize(
    "path", sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_each_manifest_is_valid_against_the_kubernetes_schema(path: str) -> None:
    """kubernetes-validate (strict: no unknown fields) accepts every document of the file."""
    docs = documents(DEPLOY / path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_broken_manifest_is_caught() -> None:
    """The validator is not a rubber stamp: a misspelled field fails."""
    [deployment] = of_kind("Deployment")
    deployment["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_rbac_grants_exactly_the_verbs_the_provider_uses() -> None:
    """The Role's rules equal the permissions the provider checks at start (no more, no less)."""
    [role] = of_kind("Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    used = {
        (p.group, p.resource + (f"/{p.subresource}" if p.subresource else ""), v)
        for p in PERMISSIONS
        for v in p.verbs
    }
    assert granted == used
    [binding] = of_kind("RoleBinding")
    [account] = of_kind("ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]


def test_the_deployment_runs_the_control_plane_with_its_tekton_sidecar_on_the_volume() -> None:
    """Both containers run existing modules with variables the code reads; the control plane reaches the sidecar
    on loopback; the claim, the service account and the Service's selector all match."""
    [deployment] = of_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"control", "tekton"}
    code = source_text()
    for container in containers.values():
        module = container["command"][container["command"].index("-m") + 1]
        assert module_runs(module)
        for item in container.get("env", []):
            assert reads_variable(item["name"], code), item["name"]
    env = {e["name"]: e["value"] for e in containers["control"]["env"]}
    sidecar = {e["name"]: e["value"] for e in containers["tekton"]["env"]}
    assert env["TACK_PROVIDERS"] == f"tekton={sidecar['TACK_TEKTON_LISTEN_ADDR']}"
    assert sidecar["TACK_TEKTON_LISTEN_ADDR"].startswith("127.0.0.1:")
    [claim] = of_kind("PersistentVolumeClaim")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert pod["serviceAccountName"] == of_kind("ServiceAccount")[0]["metadata"]["name"]
    [service] = of_kind("Service")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    [config] = of_kind("ConfigMap")
    assert all(reads_variable(name, code) for name in config["data"])
    assert pod["securityContext"]["runAsUser"] == 10001
