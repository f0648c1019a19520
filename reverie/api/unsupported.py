"""Routes of the hosted API that Reverie has not built: each answers in the API's error shape
with a message naming what is missing, never a bare 404 or a 500."""

from __future__ import annotations

from aiohttp import web

from reverie.api.errors import error_response

# (path prefix, what it is): the first match names the capability in the refusal.
NOT_BUILT: tuple[tuple[str, str], ...] = (
    ("/v1/environments/{environment_id}/work", "self-hosted environment work"),
    ("/v1/vaults", "vaults"),
    ("/v1/skills", "skills"),
    ("/v1/files", "files"),
    ("/v1/deployments", "deployments"),
    ("/v1/deployment_runs", "deployment runs"),
    ("/v1/tunnels", "tunnels"),
    ("/v1/user_profiles", "user profiles"),
    ("/v1/messages", "the Messages API (Reverie calls a model; it does not serve one)"),
    ("/v1/models", "the models list"),
)


def _refusal(what: str) -> web.Response:
    return error_response(
        400, "invalid_request_error", f"{what}: not supported yet by Reverie's API"
    )


def add_routes(app: web.Application) -> None:
    for prefix, what in NOT_BUILT:

        async def refuse(request: web.Request, what: str = what) -> web.Response:
            return _refusal(what)

        app.router.add_route("*", prefix, refuse)
        app.router.add_route("*", prefix + "/{rest:.*}", refuse)
