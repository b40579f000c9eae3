"""``/xrpc/*``: owner verification and the secrets methods of a spindle that keeps no secrets.

The appview treats any status but 200 as failure; errors are JSON
``{"error", "message"}``. tack stores no secrets: the CI provider holds them,
so listing answers an empty list and adding or removing explains that.
"""

from __future__ import annotations

from aiohttp import web

from tack_control.web import keys


SECRETS_ELSEWHERE = (
    "tack keeps no secrets: this spindle hands workflows to a CI provider,"
    " so set secrets in that provider (e.g. Buildkite's secrets or agent environment)"
)


def xrpc_error(status: int, tag: str, message: str) -> web.Response:
    """An XRPC error response."""
    return web.json_response({"error": tag, "message": message}, status=status)


async def owner(request: web.Request) -> web.Response:
    """``GET /xrpc/sh.tangled.owner``."""
    return web.json_response({"owner": request.app[keys.OWNER]})


async def list_secrets(request: web.Request) -> web.Response:
    """``GET /xrpc/sh.tangled.repo.listSecrets``: always empty."""
    if "repo" not in request.query:
        return xrpc_error(400, "InvalidRequest", "missing query parameter: repo")
    return web.json_response({"secrets": []})


async def add_secret(request: web.Request) -> web.Response:
    """``POST /xrpc/sh.tangled.repo.addSecret``: refused with the reason."""
    return xrpc_error(400, "SecretsUnsupported", SECRETS_ELSEWHERE)


async def remove_secret(request: web.Request) -> web.Response:
    """``POST /xrpc/sh.tangled.repo.removeSecret``: there is nothing to remove."""
    return xrpc_error(400, "SecretsUnsupported", SECRETS_ELSEWHERE)


async def unknown(request: web.Request) -> web.Response:
    """Any other ``/xrpc/`` method."""
    return xrpc_error(
        404, "MethodNotImplemented", f"{request.match_info['method']} is not implemented by this spindle"
    )


def add_routes(app: web.Application) -> None:
    """Mount the XRPC routes; a known method with the wrong HTTP verb answers 405 in JSON."""
    methods = {
        "sh.tangled.owner": ("GET", owner),
        "sh.tangled.repo.listSecrets": ("GET", list_secrets),
        "sh.tangled.repo.addSecret": ("POST", add_secret),
        "sh.tangled.repo.removeSecret": ("POST", remove_secret),
    }
    for nsid, (verb, handler) in methods.items():
        app.router.add_route(verb, f"/xrpc/{nsid}", handler)

        async def wrong_verb(request: web.Request, verb: str = verb) -> web.Response:
            return xrpc_error(405, "InvalidRequest", f"use {verb} for this method")

        app.router.add_route("*", f"/xrpc/{nsid}", wrong_verb)
    app.router.add_route("*", "/xrpc/{method}", unknown)
