"""``sh.tangled.ci.queryPipelines``, ``getPipeline`` and ``describeWorkflowDefinition``: JSON answers.

Errors are XRPC errors ``{"error", "message"}``: a bad parameter is 400
``InvalidRequest`` naming it; an unknown pipeline is 400 ``PipelineNotFound``
(errors a lexicon names are HTTP 400 in XRPC; generic atproto clients read 404
as "method not supported"). Every answer is counted by method and status.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tack_control import metrics
from tack_control.ingest.fingerprint import definition_names, describe_definition_hash
from tack_control.ingest.minting import LoadFailed
from tack_control.ingest.verify import ForkRefused
from tack_control.web import keys
from tack_control.web.ci import params, store
from tack_control.web.xrpc import xrpc_error


log = logging.getLogger(__name__)

QUERY = "sh.tangled.ci.queryPipelines"
GET = "sh.tangled.ci.getPipeline"
DESCRIBE = "sh.tangled.ci.describeWorkflowDefinition"
LOAD_TIMEOUT_S = 30.0
DEFINITIONS_KEPT = 256


def _json(nsid: str, body: dict[str, Any]) -> web.Response:
    metrics.CI_REQUESTS.labels(nsid, "200").inc()
    return web.Response(
        text=json.dumps(body, ensure_ascii=False, separators=(",", ":")), content_type="application/json"
    )


def _error(nsid: str, status: int, tag: str, message: str) -> web.Response:
    metrics.CI_REQUESTS.labels(nsid, str(status)).inc()
    return xrpc_error(status, tag, message)


async def query_pipelines(request: web.Request) -> web.Response:
    """``GET /xrpc/sh.tangled.ci.queryPipelines``: ``{cursor?, total, pipelines}``."""
    try:
        q = params.pipeline_query(request.query)
    except params.BadParam as exc:
        return _error(QUERY, 400, exc.tag, str(exc))
    page = store.query(request.app[keys.DB], q)
    body: dict[str, Any] = {"pipelines": page.pipelines, "total": page.total}
    if page.cursor is not None:
        body["cursor"] = page.cursor
    return _json(QUERY, body)


async def get_pipeline(request: web.Request) -> web.Response:
    """``GET /xrpc/sh.tangled.ci.getPipeline``: the bare pipeline object."""
    try:
        rkey = params.pipeline_id(request.query)
    except params.BadParam as exc:
        return _error(GET, 400, exc.tag, str(exc))
    pipeline = store.get(request.app[keys.DB], rkey)
    if pipeline is None:
        return _error(GET, 400, "PipelineNotFound", f"no pipeline {rkey} on this spindle")
    return _json(GET, pipeline)


async def _source_knot(request: web.Request, repo_did: str) -> str:
    """The knot of a source repository (a fork): registered here, seen as a pipeline's source, or vetted now
    through its DID document and knot (a fork's pull request that has not run yet). Raises ForkRefused."""
    repo = request.app[keys.REGISTRY].by_repo_did(repo_did)
    if repo is not None:
        return repo.knot
    row = (
        request.app[keys.DB]
        .execute(
            "SELECT source_knot FROM pipelines WHERE source_repo=? AND source_knot<>''"
            " ORDER BY created_ns DESC LIMIT 1",
            (repo_did,),
        )
        .fetchone()
    )
    if row is not None:
        return str(row[0])
    vet = request.app[keys.FORK_KNOT]
    if vet is None:
        raise ForkRefused(
            f"{repo_did}: neither registered here nor the source of a pipeline", transient=False
        )
    return await asyncio.wait_for(vet(repo_did), LOAD_TIMEOUT_S)


def make_describe() -> Handler:
    """The ``describeWorkflowDefinition`` handler, remembering the answers for recent commits (they never change).

    tack reads workflows from the repository, so the answer is ``derived: true``
    with the stock fingerprint of ``.tangled/workflows`` at ``sha`` (in
    ``sourceRepo`` when given: the fork of a pull request, vetted as a
    triggered fork run is) and the file names; ``workflows`` is left out when
    there are none, as stock spindles do.
    """
    answers: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()

    async def describe(request: web.Request) -> web.Response:
        try:
            q = params.definition_query(request.query)
        except params.BadParam as exc:
            return _error(DESCRIBE, 400, exc.tag, str(exc))
        repo = request.app[keys.REGISTRY].by_repo_did(q.repo)
        if repo is None:
            return _error(
                DESCRIBE, 400, "RepoNotFound", f"repository {q.repo} is not registered on this spindle"
            )
        knot, source = repo.knot, q.repo
        if q.source_repo is not None:
            try:
                knot = await _source_knot(request, q.source_repo)
            except ForkRefused as exc:
                log.info("fork not vetted", extra={"source_repo": q.source_repo, "reason": str(exc)[:300]})
                if exc.transient:
                    return _error(DESCRIBE, 502, "UpstreamFailure", f"sourceRepo {str(exc)[:300]}")
                return _error(DESCRIBE, 400, "RepoNotFound", f"sourceRepo {str(exc)[:300]}")
            except TimeoutError:
                return _error(
                    DESCRIBE,
                    504,
                    "UpstreamTimeout",
                    f"sourceRepo {q.source_repo}: not vetted within {LOAD_TIMEOUT_S:g}s",
                )
            source = q.source_repo
        key = (knot, source, q.sha)
        answer = answers.get(key)
        if answer is not None:
            answers.move_to_end(key)
            return _json(DESCRIBE, answer)
        load = request.app[keys.LOAD_WORKFLOWS]
        if load is None:
            return _error(DESCRIBE, 503, "Unavailable", "this spindle cannot read workflow files yet")
        try:
            files = await asyncio.wait_for(load(knot, source, q.sha), LOAD_TIMEOUT_S)
        except LoadFailed as exc:
            log.info(
                "workflow definition not loaded",
                extra={"knot": knot, "sha": q.sha, "transient": exc.transient, "reason": str(exc)[:300]},
            )
            if exc.transient:
                return _error(DESCRIBE, 502, "UpstreamFailure", f"reading {knot}: {str(exc)[:300]}")
            return _error(
                DESCRIBE, 400, "InvalidRequest", f"sha: cannot read .tangled/workflows: {str(exc)[:300]}"
            )
        except TimeoutError:
            log.info("workflow definition load timed out", extra={"knot": knot, "sha": q.sha})
            return _error(
                DESCRIBE, 504, "UpstreamTimeout", f"{knot} did not answer within {LOAD_TIMEOUT_S:g}s"
            )
        answer = {"derived": True, "hash": describe_definition_hash(files)}
        names = definition_names(files)
        if names:
            answer["workflows"] = names
        answers[key] = answer
        while len(answers) > DEFINITIONS_KEPT:
            answers.popitem(last=False)
        return _json(DESCRIBE, answer)

    return describe
