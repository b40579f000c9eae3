"""Packages import in one direction: the shared core depends on nothing of tack's; providers never on the control plane.

tack_common ◀── tack_provider_kit ◀── tack_provider_<name>
     ▲
     └──────── tack_control          tack_sandbox (tack_common only; it starts the others as processes)
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.support.procs import ROOT


ALLOWED = {
    "tack_common": {"tack_common"},
    "tack_provider_kit": {"tack_common", "tack_provider_kit"},
    "tack_control": {"tack_common", "tack_control"},
    "tack_sandbox": {"tack_common", "tack_sandbox"},
}
PROVIDERS = sorted(
    p.name for p in ROOT.glob("tack_provider_*") if p.name != "tack_provider_kit" and p.is_dir()
)


def tack_imports(package: str) -> dict[str, set[str]]:
    """Each module of ``package`` → the tack packages it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if "/pb/" in str(path):
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
        found[str(path.relative_to(ROOT))] = {n for n in names if n.startswith("tack_")}
    return found


@pytest.mark.parametrize("package", [*ALLOWED, *PROVIDERS])
def test_package_imports_only_what_it_may(package: str) -> None:
    """A provider imports tack_common, the kit and itself; tack_common imports nothing of tack's; and so on."""
    allowed = ALLOWED.get(package, {"tack_common", "tack_provider_kit", package})
    wrong = {
        module: sorted(names - allowed) for module, names in tack_imports(package).items() if names - allowed
    }
    assert wrong == {}


def test_there_are_providers_to_check() -> None:
    """The provider list is read from the tree (so a new provider is checked without editing this test)."""
    assert {"tack_provider_stub", "tack_provider_buildkite"} <= set(PROVIDERS)


_IMPORT_EACH_FIRST = """
import importlib, pkgutil, sys
import prometheus_client
failed = []
names = [m.name for p in sys.argv[1:] for m in pkgutil.walk_packages(importlib.import_module(p).__path__, p + ".")]
for name in names:
    if ".pb." in name or name.endswith(".__main__"):
        continue
    for loaded in [m for m in sys.modules if m.startswith("tack_") and ".pb" not in m]:
        del sys.modules[loaded]
    for collector in list(prometheus_client.REGISTRY._collector_to_names):
        prometheus_client.REGISTRY.unregister(collector)
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
print(len(names))
"""


def test_every_module_imports_when_it_is_imported_first() -> None:
    """No import cycle: each module imports cleanly as the first tack module loaded (in a fresh interpreter)."""
    packages = [*ALLOWED, *PROVIDERS]
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_FIRST, *packages],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *failures, count = done.stdout.strip().splitlines()
    assert failures == []
    assert int(count) > 50
