"""``sh.tangled.ci.triggerPipeline`` and ``sh.tangled.ci.cancelPipeline``: Run CI, Retry and Cancel, for callers with push rights.

Both take a service-auth token (``lxm`` = the method) from someone with push
rights on the repository (:meth:`Registry.may_push`): 401 for a token that is
refused, 403 ``AccessControl`` for a caller without rights. A trigger loads
the workflows at the commit, from the fork's own knot when ``sourceRepo`` names
another repository (whose repo DID is checked like a registration: its DID
document names its knot and that knot confirms it); such a run is marked
untrusted for the providers. A manual trigger runs every workflow of the
commit (or those named); a pull-request trigger runs those whose ``when:``
matches it. Retry is a manual trigger at the original commit.

The transitional names older appviews used (docs/tangled-current.md §8.11) are
served too: ``sh.tangled.ci.pipeline.cancelPipeline`` and
``sh.tangled.pipeline.cancelPipeline`` (repo and pipeline given as AT-URIs or
as a DID and a TID, one ``workflow`` or several ``workflows``), and
``sh.tangled.ci.pipeline.triggerPipeline`` (``{repo: AT-URI, sha, ref?,
workflows?}``, a manual run), a form ``sh.tangled.ci.triggerPipeline`` also
takes (told apart by ``sha`` in place of ``trigger``).

Every answer is counted in ``tack_ci_requests_total`` by method and HTTP
status; a failure tack did not foresee is logged with its traceback and
answered 500 ``InternalServerError`` in XRPC form.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tack_common.tid import is_tid
from tack_control import metrics
from tack_control.core import Core
from tack_control.engine.statuses import pipeline_uri
from tack_control.identity.pds import RecordError, parse_record_uri
from tack_control.identity.serviceauth import authenticate
from tack_control.ingest.minting import LoadFailed, Mint
from tack_control.ingest.registry import Repo
from tack_control.ingest.verify import ForkRefused
from tack_control.ingest.when import Trigger as WhenTrigger
from tack_control.ingest.wire import is_did, is_sha
from tack_control.web import keys
from tack_control.web.ci.objects import PR_ACTIONS
from tack_control.web.xrpc import XrpcFailure, json_body, xrpc_error


log = logging.getLogger(__name__)

TRIGGER = "sh.tangled.ci.triggerPipeline"
CANCEL = "sh.tangled.ci.cancelPipeline"
OLD_TRIGGER = "sh.tangled.ci.pipeline.triggerPipeline"
OLD_CANCELS = ("sh.tangled.ci.pipeline.cancelPipeline", "sh.tangled.pipeline.cancelPipeline")
MANUAL_TYPE = "sh.tangled.ci.trigger#manual"
PULL_TYPE = "sh.tangled.ci.trigger#pullRequest"
DEFAULT_PULL_ACTION = "opened"
"""A pull-request trigger without ``action`` is an opening, as ``when:`` counts it (docs §5.5)."""
MAX_WORKFLOWS = 50
MAX_INPUTS = 64
_PIPELINE_URI = re.compile(r"^at://did:web:([^/]+)/sh\.tangled\.(?:ci\.)?pipeline/([a-z2-7]{13})$")
_PULL_URI = re.compile(r"^at://did:[a-z]+:[A-Za-z0-9._:%-]+/sh\.tangled\.repo\.pull/[A-Za-z0-9._:~-]{1,512}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _fail(status: int, tag: str, message: str) -> XrpcFailure:
    return XrpcFailure(status, tag, message)


def _nsid(request: web.Request) -> str:
    """The method called (each is mounted at exactly ``/xrpc/<nsid>``): the token's ``lxm`` must name it."""
    return request.path.removeprefix("/xrpc/")


def counted(handler: Handler) -> Handler:
    """Count every answer of ``handler`` by method and status; turn an unforeseen failure into a logged 500."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        nsid = _nsid(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            metrics.CI_REQUESTS.labels(nsid, str(exc.status)).inc()
            raise
        except Exception:
            log.exception("ci call failed", extra={"method": nsid})
            metrics.CI_REQUESTS.labels(nsid, "500").inc()
            return xrpc_error(500, "InternalServerError", f"{nsid} failed inside tack; its log says why")
        metrics.CI_REQUESTS.labels(nsid, str(response.status)).inc()
        return response

    return wrapped


def _string(obj: dict[str, Any], key: str, where: str, required: bool = True, limit: int = 1024) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise _fail(
            400,
            "InvalidRequest",
            f"{where}{key}: {'required ' if required else ''}string of at most {limit} characters",
        )
    return value


def _workflow_names(body: dict[str, Any]) -> frozenset[str] | None:
    names = body.get("workflows")
    if names is None:
        return None
    if (
        not isinstance(names, list)
        or len(names) > MAX_WORKFLOWS
        or not all(isinstance(n, str) and 0 < len(n) <= 255 for n in names)
    ):
        raise _fail(400, "InvalidRequest", f"workflows: a list of at most {MAX_WORKFLOWS} workflow names")
    return frozenset(names)


def _registered(core: Core, repo_did: str, caller: str) -> Repo:
    """The registered repository, if ``caller`` may push to it."""
    if not is_did(repo_did):
        raise _fail(400, "InvalidRequest", "repo: the repository's DID")
    repo = core.registry.by_repo_did(repo_did)
    if repo is None:
        raise _fail(400, "RepoNotFound", f"{repo_did} is not a repository registered on this spindle")
    if not core.registry.may_push(repo_did, caller):
        log.info("ci call refused", extra={"caller": caller, "repo_did": repo_did})
        raise _fail(403, "AccessControl", f"{caller} has no push rights on {repo_did}")
    return repo


async def _source_knot(core: Core, repo: Repo, source_repo: str) -> str:
    """The knot of the repository the commit comes from (a fork's own knot, after checking the fork exists there)."""
    if not source_repo or source_repo == repo.repo_did:
        return repo.knot
    if not is_did(source_repo):
        raise _fail(400, "InvalidRequest", "trigger.sourceRepo: not a DID")
    try:
        return await core.fork_knot(source_repo)
    except ForkRefused as exc:
        if exc.transient:
            raise _fail(502, "UpstreamFailure", f"sourceRepo {exc}") from None
        raise _fail(400, "InvalidRepo", f"sourceRepo {exc}") from None


def _manual(trigger: dict[str, Any]) -> tuple[dict[str, Any], str, WhenTrigger]:
    sha = _string(trigger, "sha", "trigger.")
    if not is_sha(sha):
        raise _fail(400, "InvalidRequest", "trigger.sha: a 40- or 64-hex commit id")
    detail: dict[str, Any] = {"sha": sha}
    # Only shown and handed to the CI (TANGLED_REF): any name the caller resolved the commit from.
    ref = _string(trigger, "ref", "trigger.", required=False, limit=1024)
    if _CONTROL.search(ref):
        raise _fail(400, "InvalidRequest", "trigger.ref: no control characters")
    if ref:
        detail["ref"] = ref
    inputs = trigger.get("inputs")
    if inputs is not None:
        if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS:
            raise _fail(
                400, "InvalidRequest", f"trigger.inputs: a list of at most {MAX_INPUTS} {{key, value}}"
            )
        pairs = []
        for i, item in enumerate(inputs):
            if not isinstance(item, dict):
                raise _fail(400, "InvalidRequest", f"trigger.inputs[{i}]: an object {{key, value}}")
            pairs.append(
                {
                    "key": _string(item, "key", f"trigger.inputs[{i}]."),
                    "value": _string(item, "value", f"trigger.inputs[{i}].", limit=4096),
                }
            )
        detail["inputs"] = pairs
    return detail, sha, WhenTrigger("manual")


def _pull_request(trigger: dict[str, Any]) -> tuple[dict[str, Any], str, WhenTrigger]:
    target = _string(trigger, "targetBranch", "trigger.", limit=256)
    sha = _string(trigger, "sourceSha", "trigger.")
    if not is_sha(sha):
        raise _fail(400, "InvalidRequest", "trigger.sourceSha: a 40- or 64-hex commit id")
    action = _string(trigger, "action", "trigger.", required=False, limit=32) or DEFAULT_PULL_ACTION
    if action not in PR_ACTIONS:
        raise _fail(400, "InvalidRequest", f"trigger.action: one of {', '.join(sorted(PR_ACTIONS))}")
    # sourceBranch is always written (possibly ""), as stock spindles write it.
    source_branch = _string(trigger, "sourceBranch", "trigger.", required=False, limit=256)
    detail: dict[str, Any] = {
        "action": action,
        "sourceBranch": source_branch,
        "sourceSha": sha,
        "targetBranch": target,
    }
    pull = _string(trigger, "pull", "trigger.", required=False, limit=2048)
    if pull:
        if not _PULL_URI.fullmatch(pull):
            raise _fail(400, "InvalidRepo", "trigger.pull: the AT-URI of a sh.tangled.repo.pull record")
        detail["pull"] = pull
    return detail, sha, WhenTrigger("pull_request", target_branch=target, action=action)


@counted
async def trigger_pipeline(request: web.Request) -> web.Response:
    """``POST /xrpc/sh.tangled.ci.triggerPipeline`` ``{repo, trigger, workflows?}`` → ``{pipeline}``."""
    caller = await authenticate(request, _nsid(request))
    body = await json_body(request)
    # The old form has sha and no trigger; either name takes either form.
    if "trigger" not in body and ("sha" in body or _nsid(request) == OLD_TRIGGER):
        return await _old_trigger(request, caller, body)
    repo_did = _string(body, "repo", "")
    trigger = body.get("trigger")
    if not isinstance(trigger, dict):
        raise _fail(400, "InvalidRequest", "trigger: required (#manual or #pullRequest)")
    kind_type = trigger.get("$type")
    if kind_type == MANUAL_TYPE:
        kind, origin, (detail, sha, when) = "manual", "manual", _manual(trigger)
    elif kind_type == PULL_TYPE:
        kind, origin, (detail, sha, when) = "pull_request", "pull", _pull_request(trigger)
    else:
        raise _fail(
            400, "InvalidRequest", f"trigger.$type: unsupported trigger variant {str(kind_type)[:80]!r}"
        )
    source_repo = _string(trigger, "sourceRepo", "trigger.", required=False)
    return await _run(
        request, caller, repo_did, kind, origin, detail, sha, when, source_repo, _workflow_names(body)
    )


async def _old_trigger(request: web.Request, caller: str, body: dict[str, Any]) -> web.Response:
    """The transitional form ``{repo: AT-URI (or DID), sha, ref?, workflows?}``: a manual run."""
    repo_did = await _repo_did_of(request, body.get("repo"))
    manual = {"sha": body.get("sha"), **({"ref": body["ref"]} if body.get("ref") is not None else {})}
    detail, sha, when = _manual(manual)
    return await _run(
        request, caller, repo_did, "manual", "manual", detail, sha, when, "", _workflow_names(body)
    )


async def _run(
    request: web.Request,
    caller: str,
    repo_did: str,
    kind: str,
    origin: str,
    detail: dict[str, Any],
    sha: str,
    when: WhenTrigger,
    source_repo: str,
    only: frozenset[str] | None,
) -> web.Response:
    core = request.app[keys.CORE]
    repo = _registered(core, repo_did, caller)
    knot = await _source_knot(core, repo, source_repo)
    forked = bool(source_repo) and source_repo != repo.repo_did
    if forked:
        detail = {**detail, "sourceRepo": source_repo}
    mint = Mint(
        repo=repo,
        kind=kind,
        detail=detail,
        commit=sha,
        origin=origin,
        source_repo=source_repo if forked else "",
        source_knot=knot if forked else "",
        untrusted=forked,
        only=only,
        when=when,
    )
    try:
        files = await core.load_workflows(knot, source_repo if forked else repo.repo_did, sha)
    except LoadFailed as exc:
        log.info(
            "triggered commit could not be loaded",
            extra={"caller": caller, "repo_did": repo.repo_did, "sha": sha, "error": str(exc)},
        )
        if exc.transient:
            raise _fail(
                502, "UpstreamFailure", f"cannot load .tangled/workflows at {sha} from {knot}: {exc}"
            ) from None
        raise _fail(400, "InvalidRequest", f"cannot load .tangled/workflows at {sha}: {exc}") from None
    if only is not None and (unknown := sorted(only - {name for name, _ in files})):
        raise _fail(400, "InvalidRequest", f"no workflow named {', '.join(unknown)} at {sha}")
    routed = core.minter.select(files, mint)
    if not routed:
        if not files:
            reason = f"no workflow files at {sha} (.tangled/workflows is empty or missing)"
        else:
            reason = f"none of the {len(files)} workflow files at {sha} matches this {kind.replace('_', ' ')} trigger"
        raise _fail(400, "InvalidRequest", f"no workflows to run: {reason}")
    rkey = core.pipelines.mint_rkey()
    spec = await core.minter.spec(mint, rkey, routed)
    with core.book.transaction() as conn:
        core.pipelines.create(conn, spec)
    if any(r.route.provider for r in routed):
        core.dispatcher.poke()
    uri = pipeline_uri(repo.knot, rkey)
    log.info(
        "pipeline triggered",
        extra={
            "caller": caller,
            "repo_did": repo.repo_did,
            "kind": kind,
            "rkey": rkey,
            "untrusted": forked,
            "workflows": len(routed),
        },
    )
    return web.json_response({"pipeline": uri})


async def _repo_did_of(request: web.Request, repo: Any) -> str:
    """A repo DID given as itself or as the AT-URI of its sh.tangled.repo record (read from its owner's PDS)."""
    if isinstance(repo, str) and is_did(repo):
        return repo
    if not isinstance(repo, str) or not repo.startswith("at://"):
        raise _fail(400, "InvalidRequest", "repo: a repo DID or the AT-URI of its sh.tangled.repo record")
    try:
        record = await request.app[keys.PDS].get_record(parse_record_uri(repo, "sh.tangled.repo"))
    except RecordError as exc:
        if exc.reason == "unavailable":
            raise _fail(502, "UpstreamFailure", str(exc)) from None
        raise _fail(400, "InvalidRepo" if exc.reason == "bad_uri" else "RepoNotFound", str(exc)) from None
    repo_did = record.get("repoDid")
    if not isinstance(repo_did, str) or not is_did(repo_did):
        raise _fail(400, "InvalidRepo", f"repo record {repo} has no repoDid")
    return repo_did


def _cancel_names(body: dict[str, Any]) -> frozenset[str] | None:
    """``workflows`` (current), or the one ``workflow`` of ``sh.tangled.pipeline.cancelPipeline``; None = all."""
    names = _workflow_names(body)
    single = body.get("workflow")
    if names is None and single is not None:
        if not isinstance(single, str) or not 0 < len(single) <= 255:
            raise _fail(400, "InvalidRequest", "workflow: a workflow name")
        names = frozenset({single})
    return names


@counted
async def cancel_pipeline(request: web.Request) -> web.Response:
    """``POST /xrpc/sh.tangled.ci.cancelPipeline`` ``{repo, pipeline, workflows?}`` → 200, empty."""
    caller = await authenticate(request, _nsid(request))
    body = await json_body(request)
    pipeline = body.get("pipeline")
    knot_hint = ""
    if isinstance(pipeline, str) and (m := _PIPELINE_URI.fullmatch(pipeline)):
        knot_hint, pipeline = m.group(1), m.group(2)
    if not isinstance(pipeline, str) or not is_tid(pipeline):
        raise _fail(400, "InvalidRequest", "pipeline: the pipeline's TID (or its AT-URI)")
    names = _cancel_names(body)
    repo_did = await _repo_did_of(request, body.get("repo"))
    core = request.app[keys.CORE]
    _registered(core, repo_did, caller)
    rows = core.conn.execute(
        "SELECT knot, repo_did FROM pipelines WHERE rkey=? ORDER BY created_ns DESC", (pipeline,)
    ).fetchall()
    rows = [r for r in rows if not knot_hint or r[0] == knot_hint]
    if not rows:
        raise _fail(400, "PipelineNotFound", f"no pipeline {pipeline} on this spindle")
    mine = [r for r in rows if r[1] == repo_did]
    if not mine:
        log.info("ci call refused", extra={"caller": caller, "repo_did": repo_did, "rkey": pipeline})
        raise _fail(403, "AccessControl", f"pipeline {pipeline} does not belong to {repo_did}")
    knot = mine[0][0]
    if names is not None:
        known = {
            r[0]
            for r in core.conn.execute("SELECT name FROM workflows WHERE knot=? AND rkey=?", (knot, pipeline))
        }
        if unknown := sorted(names - known):
            raise _fail(400, "WorkflowNotFound", f"pipeline {pipeline} has no workflow {', '.join(unknown)}")
    with core.book.transaction() as conn:
        cancelled = core.cancels.request(conn, knot, pipeline, sorted(names) if names is not None else None)
    core.cancels.poke()
    log.info(
        "pipeline cancelled",
        extra={"caller": caller, "repo_did": repo_did, "rkey": pipeline, "workflows": cancelled},
    )
    return web.Response(status=200)


METHODS: dict[str, tuple[str, Any]] = {
    TRIGGER: ("POST", trigger_pipeline),
    CANCEL: ("POST", cancel_pipeline),
    OLD_TRIGGER: ("POST", trigger_pipeline),
    **{nsid: ("POST", cancel_pipeline) for nsid in OLD_CANCELS},
}
