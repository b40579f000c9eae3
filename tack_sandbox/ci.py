"""Run, retry and cancel CI in a running sandbox through the spindle's XRPC API, as the appview's buttons do.

Each call carries a service-auth token for its method, signed with the sandbox
owner's key by ``python -m tack_control token`` (the key whose Multikey the
owner's DID document publishes on the simulated PLC directory), so tack checks
it exactly as it checks a token from a real PDS:

- ``run-ci``: ``sh.tangled.ci.triggerPipeline`` with a ``#manual`` trigger at the
  sample repository's ``main`` (read from the knot with ``git ls-remote``), or,
  with a pipeline id, at that pipeline's commit (a retry);
- ``cancel``: ``sh.tangled.ci.cancelPipeline`` for the pipeline given, or the
  newest one with a workflow still pending or running
  (``sh.tangled.ci.queryPipelines``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any
from urllib.parse import quote

import aiohttp

from tack_sandbox.gitrepos import git
from tack_sandbox.state import SandboxState


TRIGGER = "sh.tangled.ci.triggerPipeline"
CANCEL = "sh.tangled.ci.cancelPipeline"
QUERY = "sh.tangled.ci.queryPipelines"
GET = "sh.tangled.ci.getPipeline"
MANUAL = "sh.tangled.ci.trigger#manual"
UNFINISHED = ("pending", "running")
TIMEOUT = aiohttp.ClientTimeout(total=30)


class CiError(Exception):
    """A call failed; the message says what the spindle (or the signer) answered."""


def say(text: str) -> None:
    """Print a line for the person at the terminal."""
    print(text, flush=True)


async def sign(state: SandboxState, lxm: str) -> str:
    """A fresh service-auth token for ``lxm`` from the sandbox owner (``python -m tack_control token``)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tack_control",
        "token",
        "--lxm",
        lxm,
        "--iss",
        state.owner,
        "--key",
        state.key_path,
        env={**os.environ, "TACK_HOSTNAME": state.hostname},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise CiError(f"python -m tack_control token failed: {err.decode(errors='replace').strip()}")
    return out.decode().strip()


async def _xrpc(
    session: aiohttp.ClientSession, state: SandboxState, nsid: str, *, body: Any = None, params: Any = None
) -> Any:
    """Call ``nsid`` (a procedure with a signed token when ``body`` is given, else a public query); its JSON answer."""
    url = f"{state.spindle}/xrpc/{nsid}"
    if body is None:
        request = session.get(url, params=params)
    else:
        token = await sign(state, nsid)
        request = session.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    async with request as resp:
        text = await resp.text()
        if resp.status != 200:
            raise CiError(f"{nsid} answered HTTP {resp.status}: {text.strip()[:500]}")
    return json.loads(text) if text.strip() else None


async def head_of_main(state: SandboxState) -> str:
    """The commit ``main`` points at, asked of the knot over git smart HTTP."""
    out = await git("ls-remote", state.clone_url, "refs/heads/main")
    if not out.strip():
        raise CiError(f"{state.clone_url} has no main branch yet")
    return out.split()[0]


async def run_ci(state: SandboxState, pipeline: str | None = None) -> str:
    """Trigger a manual run (at main's head, or at ``pipeline``'s commit); the new pipeline's AT-URI."""
    if not state.repo_did:
        raise CiError("the sandbox runs a 2025-protocol (legacy) knot: its repository has no DID to trigger")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        trigger: dict[str, Any] = {"$type": MANUAL, "ref": "refs/heads/main"}
        if pipeline is None:
            trigger["sha"] = await head_of_main(state)
        else:
            old = await _xrpc(session, state, GET, params={"pipeline": pipeline})
            trigger["sha"] = old["commit"]
            ref = old.get("trigger", {}).get("ref")
            if isinstance(ref, str) and ref.startswith("refs/"):
                trigger["ref"] = ref
            else:
                del trigger["ref"]
        answer = await _xrpc(session, state, TRIGGER, body={"repo": state.repo_did, "trigger": trigger})
    return str(answer["pipeline"])


async def newest_unfinished(session: aiohttp.ClientSession, state: SandboxState) -> str | None:
    """The newest pipeline of the sample repository with a workflow still pending or running."""
    answer = await _xrpc(session, state, QUERY, params={"repo": state.repo_did, "limit": "50"})
    for found in answer["pipelines"]:
        if any(w.get("status") in UNFINISHED for w in found.get("workflows", [])):
            return str(found["id"])
    return None


async def cancel(state: SandboxState, pipeline: str | None = None) -> str | None:
    """Cancel ``pipeline`` (default: the newest unfinished one); its id, or None when nothing runs."""
    if not state.repo_did:
        raise CiError(
            "the sandbox runs a 2025-protocol (legacy) knot: its repository has no DID to cancel for"
        )
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        if pipeline is None:
            pipeline = await newest_unfinished(session, state)
            if pipeline is None:
                return None
        await _xrpc(session, state, CANCEL, body={"repo": state.repo_did, "pipeline": pipeline})
    return pipeline


def api_urls(state: SandboxState) -> dict[str, str]:
    """The CI API URLs of the sample repository, for the banner."""
    ws = "ws" + state.spindle.removeprefix("http")
    return {
        "pipelines": f"{state.spindle}/xrpc/{QUERY}?repo={quote(state.repo_did)}",
        "pipeline": f"{state.spindle}/xrpc/{GET}?pipeline=<pipeline id>",
        "logs": f"{ws}/xrpc/sh.tangled.ci.subscribePipelineLogs?pipeline=<pipeline id>",
    }
