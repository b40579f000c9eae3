"""The locks pin every dependency pyproject.toml names, at the same version, with hashes."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.support.procs import ROOT


def _lock(name: str = "requirements.lock") -> dict[str, tuple[str, list[str]]]:
    """name → (version, hashes) of every package in a lock file."""
    text = (ROOT / name).read_text()
    entries: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[a-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.-]+)==([^ \\;\n]+)", block)
        if match:
            entries[_norm(match.group(1))] = (
                match.group(2),
                re.findall(r"--hash=sha256:([0-9a-f]{64})", block),
            )
    return entries


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(dev: bool = True) -> dict[str, str]:
    """name → version of every direct dependency (runtime, build and, with ``dev``, development)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    specs = [
        *project["project"]["dependencies"],
        *(project["project"]["optional-dependencies"]["dev"] if dev else []),
        *project["build-system"]["requires"],
    ]
    pins = {}
    for spec in specs:
        name, sep, version = spec.partition("==")
        assert sep, f"{spec}: pin an exact version"
        pins[_norm(name)] = version
    return pins


@pytest.mark.parametrize(
    ("lock_file", "dev"), [("requirements.lock", True), ("requirements-runtime.lock", False)]
)
def test_every_pin_is_locked_at_its_version(lock_file: str, dev: bool) -> None:
    """Each direct dependency appears in the lock at the version pyproject.toml pins (run `make lock` after a change)."""
    lock = _lock(lock_file)
    for name, version in _pins(dev).items():
        assert name in lock, f"{name} is not in requirements.lock: run make lock"
        assert lock[name][0] == version, (
            f"{name}: pyproject pins {version}, the lock has {lock[name][0]}: run make lock"
        )


@pytest.mark.parametrize("lock_file", ["requirements.lock", "requirements-runtime.lock"])
def test_every_locked_package_has_a_hash(lock_file: str) -> None:
    """pip installs with --require-hashes, so every locked package carries at least one sha256."""
    lock = _lock(lock_file)
    assert len(lock) > len(_pins(dev=False))
    assert [name for name, (_, hashes) in lock.items() if not hashes] == []
