"""Manifest ``webhook`` triggers: which fire when a job ends, their payload and signature (docs/sourcehut-api.md §8)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tack_sandbox._loopback import go_json
from tests.fakes.sourcehut.state import Job


_FAILURES = frozenset({"FAILED", "TIMEOUT", "CANCELLED"})


def fires(condition: str, status: str) -> bool:
    """Whether a trigger with ``condition`` runs after a job that ended ``status``."""
    return (
        condition == "always"
        or (condition == "failure" and status in _FAILURES)
        or (condition == "success" and status == "SUCCESS")
    )


def payload(job: Job) -> bytes:
    """The runner's JSON for a finished job: lower-case statuses, runner-internal log URLs."""
    runner = job.runner or ""
    body = {
        "id": job.id,
        "status": job.status.lower(),
        "setup_log": f"http://{runner}/logs/{job.id}/log",
        "tasks": [
            {"name": t.name, "status": t.status.lower(), "log": f"http://{runner}/logs/{job.id}/{t.name}/log"}
            for t in job.tasks
        ]
        or None,
        "note": job.note,
        "runner": job.runner,
        "owner": {"canonical_name": f"~{job.owner}", "name": job.owner},
    }
    return go_json(body, sort_keys=False).encode()


class Signer:
    """The instance's webhook key: signs body + nonce with Ed25519."""

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self._key = key or Ed25519PrivateKey.generate()

    @property
    def public_key(self) -> str:
        """Base64 of the raw public key, the form man.sr.ht publishes."""
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def sign(self, body: bytes) -> tuple[str, str]:
        """(``X-Payload-Nonce``, ``X-Payload-Signature``) for ``body``."""
        nonce = secrets.token_hex(8)
        return nonce, base64.b64encode(self._key.sign(body + nonce.encode())).decode()


def verify(public_key: str, body: bytes, nonce: str, signature: str) -> bool:
    """Check a delivery as a receiver would (the test side of §8)."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
        key.verify(base64.b64decode(signature), body + nonce.encode())
    except Exception:
        return False
    return True


@dataclass
class Delivery:
    """One trigger POST and how it went."""

    job_id: int
    url: str
    body: bytes
    nonce: str
    signature: str
    status: int | None = None
    error: str | None = None
