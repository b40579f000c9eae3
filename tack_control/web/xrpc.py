"""``/xrpc/*``: owner verification and the secrets methods of a spindle that keeps no secrets.

The appview treats any status but 200 as failure; errors are JSON
``{"error", "message"}``. The secrets methods take the repo as the AT-URI of
its ``sh.tangled.repo`` record and a service-auth token for the method: the
caller is verified (401 otherwise), the record read from its owner's PDS (it
must carry a ``repoDid``), and the caller must own or collaborate on that
repository as registered here (403 otherwise) before tack answers. tack stores no secrets:
the CI provider holds them, so listing answers an empty list and adding or
removing explains where secrets go.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from tack_control.identity.pds import RecordError, parse_record_uri
from tack_control.identity.serviceauth import authenticate
from tack_control.web import keys


log = logging.getLogger(__name__)

LIST_SECRETS = "sh.tangled.repo.listSecrets"
ADD_SECRET = "sh.tangled.repo.addSecret"
REMOVE_SECRET = "sh.tangled.repo.removeSecret"
REPO_COLLECTION = "sh.tangled.repo"
SECRETS_ELSEWHERE = (
    "tack keeps no secrets: this spindle hands workflows to a CI provider,"
    " so set secrets in that provider (e.g. Buildkite's secrets or agent environment)"
)
_SECRET_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,49}$")


def xrpc_error(status: int, tag: str, message: str) -> web.Response:
    """An XRPC error response."""
    return web.json_response({"error": tag, "message": message}, status=status)


class XrpcFailure(web.HTTPException):
    """An XRPC error raised from inside a handler's helpers."""

    def __init__(self, status: int, tag: str, message: str) -> None:
        self.status_code = status
        super().__init__(text=json.dumps({"error": tag, "message": message}), content_type="application/json")


async def owner(request: web.Request) -> web.Response:
    """``GET /xrpc/sh.tangled.owner``."""
    return web.json_response({"owner": request.app[keys.OWNER]})


async def list_secrets(request: web.Request) -> web.Response:
    """``GET /xrpc/sh.tangled.repo.listSecrets?repo=<at-uri>``: always empty, for a verified caller and repo."""
    caller = await authenticate(request, LIST_SECRETS)
    repo_did = await _authorized_repo_did(request, caller, request.query.get("repo", ""))
    log.info("secrets listed", extra={"caller": caller, "repo_did": repo_did})
    return web.json_response({"secrets": []})


async def add_secret(request: web.Request) -> web.Response:
    """``POST /xrpc/sh.tangled.repo.addSecret`` ``{repo, key, value}``: refused with where secrets go instead."""
    caller = await authenticate(request, ADD_SECRET)
    body = await json_body(request)
    if not isinstance(body.get("key"), str) or not _SECRET_KEY.fullmatch(body["key"]):
        raise XrpcFailure(
            400, "InvalidRequest", "key must match [a-zA-Z_][a-zA-Z0-9_]* (at most 50 characters)"
        )
    if not isinstance(body.get("value"), str):
        raise XrpcFailure(400, "InvalidRequest", "value must be a string")
    await _authorized_repo_did(request, caller, body.get("repo"))
    return xrpc_error(400, "SecretsUnsupported", SECRETS_ELSEWHERE)


async def remove_secret(request: web.Request) -> web.Response:
    """``POST /xrpc/sh.tangled.repo.removeSecret`` ``{repo, key}``: there is nothing to remove."""
    caller = await authenticate(request, REMOVE_SECRET)
    body = await json_body(request)
    await _authorized_repo_did(request, caller, body.get("repo"))
    return xrpc_error(400, "SecretsUnsupported", SECRETS_ELSEWHERE)


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise XrpcFailure(400, "InvalidRequest", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise XrpcFailure(400, "InvalidRequest", "the body must be a JSON object")
    return body


async def _authorized_repo_did(request: web.Request, caller: str, repo: Any) -> str:
    """The ``repoDid`` of the ``sh.tangled.repo`` record at AT-URI ``repo``, read from its owner's PDS."""
    if not isinstance(repo, str) or not repo:
        raise XrpcFailure(
            400, "InvalidRequest", "repo (the AT-URI of the sh.tangled.repo record) is required"
        )
    try:
        uri = parse_record_uri(repo, REPO_COLLECTION)
        record = await request.app[keys.PDS].get_record(uri)
    except RecordError as exc:
        log.info(
            "secrets call for an unreadable repo", extra={"caller": caller, "repo": repo, "error": str(exc)}
        )
        if exc.reason == "unavailable":
            raise XrpcFailure(502, "UpstreamFailure", str(exc)) from None
        tag = "InvalidRepo" if exc.reason == "bad_uri" else "RepoNotFound"
        raise XrpcFailure(400, tag, str(exc)) from None
    repo_did = record.get("repoDid")
    if not isinstance(repo_did, str) or not repo_did.startswith("did:"):
        raise XrpcFailure(400, "InvalidRepo", f"repo record {repo} has no repoDid")
    if not request.app[keys.REGISTRY].may_push(repo_did, caller):
        log.info("secrets call refused", extra={"caller": caller, "repo_did": repo_did})
        raise XrpcFailure(
            403,
            "AccessControl",
            f"{caller} is not the owner or a collaborator of {repo_did} on this spindle"
            " (or the repository is not registered here)",
        )
    return repo_did


async def unknown(request: web.Request) -> web.Response:
    """Any other ``/xrpc/`` method."""
    return xrpc_error(
        404, "MethodNotImplemented", f"{request.match_info['method']} is not implemented by this spindle"
    )


def add_routes(app: web.Application, more: Mapping[str, tuple[str, Handler]] | None = None) -> None:
    """Mount the XRPC routes (and ``more``: NSID → verb, handler); a known method with the wrong HTTP verb answers 405 in JSON."""
    methods: dict[str, tuple[str, Handler]] = {
        "sh.tangled.owner": ("GET", owner),
        LIST_SECRETS: ("GET", list_secrets),
        ADD_SECRET: ("POST", add_secret),
        REMOVE_SECRET: ("POST", remove_secret),
        **(more or {}),
    }
    for nsid, (verb, handler) in methods.items():
        app.router.add_route(verb, f"/xrpc/{nsid}", handler)

        async def wrong_verb(request: web.Request, verb: str = verb) -> web.Response:
            return xrpc_error(405, "InvalidRequest", f"use {verb} for this method")

        app.router.add_route("*", f"/xrpc/{nsid}", wrong_verb)
    app.router.add_route("*", "/xrpc/{method}", unknown)
