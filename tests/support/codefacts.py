"""What the shipped code defines, for tests that check documents and deployment files against it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "tack_common",
    "tack_control",
    "tack_provider_kit",
    "tack_provider_stub",
    "tack_provider_buildkite",
    "tack_provider_tekton",
    "tack_provider_sourcehut",
    "tack_sandbox",
)
SETTINGS_SUFFIXES = (
    "_LISTEN_ADDR",
    "_METRICS_ADDR",
    "_DB_PATH",
    "_RETENTION_DAYS",
    "_TLS_CERT_FILE",
    "_TLS_KEY_FILE",
)


def source_text() -> str:
    """All shipped Python source except generated code."""
    return "\n".join(
        path.read_text() for pkg in PACKAGES for path in (ROOT / pkg).rglob("*.py") if "/pb/" not in str(path)
    )


def reads_variable(name: str, code: str) -> bool:
    """Whether the code reads environment variable ``name`` (literally, or as a provider setting built from a prefix)."""
    if f'"{name}"' in code:
        return True
    return any(name.endswith(s) and f'prefix="{name.removesuffix(s)}"' in code for s in SETTINGS_SUFFIXES)


def defines_metric(name: str, code: str) -> bool:
    """Whether a Prometheus metric called ``name`` (as exported) is defined in the code."""
    candidates = {name, name.removesuffix("_info")}
    return any(f'"{c}"' in code for c in candidates)


def module_runs(module: str) -> bool:
    """Whether ``python -m module`` can start (a module, or a package with ``__main__``)."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    if spec.submodule_search_locations:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    return True


def make_targets() -> set[str]:
    """Targets defined in the Makefile."""
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.MULTILINE))
