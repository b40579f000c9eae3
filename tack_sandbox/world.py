"""The simulated Tangled the sandbox runs on loopback: who owns what, and the pushes and pull requests.

Both protocols share an owner account (a did:plc whose document, on the
simulated PLC directory, names the simulated PDS and publishes the signing key
the sandbox keeps, so its service-auth tokens verify) and a repository record
naming the local spindle, written to the PDS and committed on the simulated
Jetstream.

- ``current`` (Tangled v1.16+, the default): the knot hosts a real git
  repository under a repo DID (its document names the knot), served over smart
  HTTP, and sends ``sh.tangled.git.refUpdate`` for every push; tack loads the
  workflows itself. A pull request is a branch pushed to the knot, its
  ``git format-patch`` series gzipped as a blob in the owner's PDS and a
  ``sh.tangled.repo.pull`` record committed on Jetstream.
- ``legacy`` (the 2025 protocol): the repository record has no repo DID and
  the knot sends ``sh.tangled.pipeline`` triggers with the compiled workflows,
  for pushes and pull requests alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tack_common.tid import TidClock
from tack_common.timefmt import rfc3339_seconds
from tack_sandbox import demo
from tack_sandbox._loopback import JsonObject
from tack_sandbox.jetstream import SimulatedJetstream
from tack_sandbox.knot import HostedRepo, SimulatedKnot, pipeline_record
from tack_sandbox.pds import SimulatedPds
from tack_sandbox.plc import SimulatedPlc, did_document
from tack_sandbox.pulls import PATCH_MIME, PULL_NSID, format_patch, pull_record


SANDBOX_OWNER = "did:plc:tacksandboxowner22222222"
SANDBOX_REPO_DID = "did:plc:tacksandboxrepo222222222"
SANDBOX_REPO = "sample"
OWNER_HANDLE = "owner.sandbox.invalid"
REPO_NSID = "sh.tangled.repo"
Protocol = Literal["current", "legacy"]
PROTOCOLS: tuple[Protocol, ...] = ("current", "legacy")


@dataclass(frozen=True)
class Change:
    """What a trigger did, for the person at the terminal."""

    summary: str
    ref: str = ""
    sha: str = ""
    pipeline: str = ""
    """The pipeline rkey, when the knot minted it (legacy)."""
    pull: str = ""
    """The pull record's AT-URI (current)."""


def _now() -> str:
    return rfc3339_seconds(time.time_ns())


class SandboxWorld:
    """The simulators, and the sandbox owner's account and repository on them."""

    def __init__(self, protocol: Protocol, state_dir: Path) -> None:
        self.protocol = protocol
        self.plc = SimulatedPlc()
        self.pds = SimulatedPds()
        self.jetstream = SimulatedJetstream()
        self.knot = SimulatedKnot(
            protocol=protocol,
            ping_interval=20,
            git_root=state_dir / "git" if protocol == "current" else None,
        )
        self.repo_rkey = TidClock(1).next()
        self._tids = TidClock(2)
        self._pushed = False
        self._changes: list[str] = []
        self._pulls = 0

    @property
    def current(self) -> bool:
        """Whether the knot speaks current Tangled."""
        return self.protocol == "current"

    @property
    def clone_url(self) -> str:
        """The sample repository's git URL (current protocol)."""
        return f"http://{self.knot.hostname}/{SANDBOX_REPO_DID}"

    async def start(self, owner_multikey: str) -> None:
        """Start every simulator and publish the owner (with ``owner_multikey`` as its signing key) and the repository."""
        for server in (self.plc, self.pds, self.jetstream, self.knot):
            await server.start()
        self.plc.publish(
            did_document(SANDBOX_OWNER, pds=self.pds.url, handle=OWNER_HANDLE, multikey=owner_multikey)
        )
        self.pds.host(SANDBOX_OWNER)
        if self.current:
            await self.knot.create_repo(HostedRepo(SANDBOX_REPO_DID, SANDBOX_OWNER, self.repo_rkey))
            self.plc.publish(did_document(SANDBOX_REPO_DID, pds=f"http://{self.knot.hostname}"))

    async def stop(self) -> None:
        """Stop every simulator."""
        for server in (self.knot, self.jetstream, self.pds, self.plc):
            await server.stop()

    def repo_record(self, spindle: str) -> JsonObject:
        """The owner's ``sh.tangled.repo`` record choosing ``spindle`` (with the repo DID in current mode)."""
        record: JsonObject = {
            "$type": REPO_NSID,
            "name": SANDBOX_REPO,
            "knot": self.knot.hostname,
            "spindle": spindle,
            "createdAt": _now(),
        }
        if self.current:
            record["repoDid"] = SANDBOX_REPO_DID
        return record

    async def register(self, spindle: str, timeout: float = 30.0) -> None:
        """Write the repository record (PDS, then Jetstream once tack follows it) and wait for tack's knot stream."""
        record = self.repo_record(spindle)
        self.pds.put_record(SANDBOX_OWNER, REPO_NSID, self.repo_rkey, record)
        await self.jetstream.wait_connected(1, timeout=timeout)
        self.jetstream.commit(SANDBOX_OWNER, REPO_NSID, self.repo_rkey, "create", record)
        await self.knot.wait_connected(1, timeout=timeout)

    async def push(self) -> Change:
        """The first push brings the sample repository; later ones change a file (legacy: a new trigger)."""
        if not self.current:
            rkey = self.knot.new_rkey()
            self.knot.emit_pipeline(
                rkey,
                pipeline_record(
                    knot=self.knot.hostname, did=SANDBOX_OWNER, repo=SANDBOX_REPO, workflows=demo.workflows()
                ),
            )
            return Change(f"knot sent pipeline {rkey} (build.yml, lint.yml)", pipeline=rkey)
        if not self._pushed:
            files = demo.repository_files()
            message = "sample repository with its CI workflows"
        else:
            self._changes.append(f"sandbox change {len(self._changes) + 1} at {_now()}")
            files = {"CHANGELOG.md": "".join(f"- {line}\n" for line in self._changes)}
            message = self._changes[-1]
        pushed = await self.knot.push(SANDBOX_REPO_DID, files, message=message)
        self._pushed = True
        return Change(
            f"pushed {pushed.new_sha[:10]} to {pushed.ref} (changed: {', '.join(pushed.changed_files)})",
            ref=pushed.ref,
            sha=pushed.new_sha,
        )

    async def open_pull(self) -> Change:
        """Open a pull request from a new branch into main."""
        self._pulls += 1
        branch = f"sandbox/pr-{self._pulls}"
        if not self.current:
            rkey = self.knot.new_rkey()
            self.knot.emit_pipeline(
                rkey,
                pipeline_record(
                    knot=self.knot.hostname,
                    did=SANDBOX_OWNER,
                    repo=SANDBOX_REPO,
                    kind="pull_request",
                    source_branch=branch,
                    workflows=demo.workflows(),
                ),
            )
            return Change(f"knot sent pull request pipeline {rkey} ({branch} → main)", pipeline=rkey)
        assert self.knot.git is not None
        pushed = await self.knot.push(
            SANDBOX_REPO_DID,
            {
                f"src/feature_{self._pulls}.c": f"int feature_{self._pulls}(void) {{ return {self._pulls}; }}\n"
            },
            branch=branch,
            base="main",
            message=f"add feature {self._pulls}",
        )
        patch = await format_patch(
            self.knot.git.repo_path(SANDBOX_REPO_DID), "refs/heads/main", f"refs/heads/{branch}"
        )
        blob = self.pds.upload_blob(SANDBOX_OWNER, patch, PATCH_MIME)
        record = pull_record(
            target_repo=SANDBOX_REPO_DID,
            target_branch="main",
            source_branch=branch,
            patch_blobs=[blob],
            title=f"Add feature {self._pulls}",
            created_at=_now(),
        )
        rkey = self._tids.next()
        uri = self.pds.put_record(SANDBOX_OWNER, PULL_NSID, rkey, record)
        self.jetstream.commit(SANDBOX_OWNER, PULL_NSID, rkey, "create", record)
        return Change(
            f"opened pull request {uri} ({branch} → main at {pushed.new_sha[:10]}, patch blob {blob['ref']['$link']})",
            ref=pushed.ref,
            sha=pushed.new_sha,
            pull=uri,
        )
