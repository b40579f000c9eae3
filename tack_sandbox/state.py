"""What a running sandbox tells the commands of other terminals (``make trigger``, ``make ci-run``, …):
a JSON file in the data directory, written once the sandbox is up and removed when it stops."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


STATE_FILE = "sandbox.json"


class NotRunning(Exception):
    """No sandbox is running in this data directory."""


@dataclass(frozen=True)
class SandboxState:
    """The running sandbox's addresses and identities."""

    protocol: str
    trigger_url: str
    """The launcher's own endpoint that pushes and opens pull requests on the simulated knot."""
    spindle: str
    """``http://host:port`` of the control plane."""
    hostname: str
    """``TACK_HOSTNAME`` (the spindle's did:web is derived from it)."""
    knot: str
    owner: str
    repo_did: str
    """The sample repository's DID ("" in legacy mode)."""
    key_path: str
    """The owner's signing key (PEM), which the owner's DID document publishes."""
    clone_url: str


def write(data_dir: Path, state: SandboxState) -> None:
    """Publish ``state`` for other commands."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))


def read(data_dir: Path) -> SandboxState:
    """The running sandbox's state; NotRunning when there is none."""
    try:
        return SandboxState(**json.loads((data_dir / STATE_FILE).read_text()))
    except FileNotFoundError:
        raise NotRunning("no sandbox is running (start one with `make run` in another terminal)") from None


def remove(data_dir: Path) -> None:
    """The sandbox stopped."""
    (data_dir / STATE_FILE).unlink(missing_ok=True)
