"""The HTTP layer itself: keys, errors in the API's shape, limits, request ids, unknown routes."""

from __future__ import annotations

import json

import aiohttp
import anthropic
import pytest

from reverie.service.client import ReverieClient
from reverie.store import keys
from tests.api_support import Api

JSON = {"content-type": "application/json"}


async def call(
    api: Api, method: str, path: str, *, key: str | None = "default", **kwargs: object
) -> tuple[int, dict[str, str], dict]:
    headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[arg-type]
    if key == "default":
        key = api.key
    if key is not None:
        headers.setdefault("x-api-key", key)
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, api.base_url + path, headers=headers, **kwargs) as response,  # type: ignore[arg-type]
    ):
        body = await response.read()
        return response.status, dict(response.headers), json.loads(body) if body else {}


def assert_error(body: dict, error_type: str, *words: str) -> None:
    assert body["type"] == "error" and body["error"]["type"] == error_type, body
    message = body["error"]["message"]
    for word in words:
        assert word in message, message
    assert "Traceback" not in message and 'File "' not in message


async def test_every_route_needs_a_valid_key(api: Api, reverie: ReverieClient) -> None:
    status, headers, body = await call(api, "GET", "/v1/agents", key=None)
    assert status == 401 and headers["request-id"].startswith("req_")
    assert_error(body, "authentication_error", "x-api-key")
    for wrong in ("rvk_nothing.secret", "not-a-key", api.key + "x", api.key.split(".")[0] + ".x"):
        status, _, body = await call(api, "GET", "/v1/agents", key=wrong)
        assert status == 401, wrong
        assert_error(body, "authentication_error")
    # Bearer works as well as x-api-key.
    status, _, body = await call(
        api, "GET", "/v1/agents", key=None, headers={"Authorization": f"Bearer {api.key}"}
    )
    assert status == 200 and "data" in body
    # The SDK's own exception for it.
    bad = anthropic.AsyncAnthropic(base_url=api.base_url, api_key="rvk_x.y", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await bad.beta.agents.list()
    await bad.close()


async def test_a_revoked_key_stops_working(api: Api, reverie: ReverieClient) -> None:
    created = await keys.create(reverie.pool, "short-lived", "tests")
    status, _, _ = await call(api, "GET", "/v1/environments", key=created.key)
    assert status == 200
    await keys.revoke(reverie.pool, created.id)
    # A verification is remembered for a few seconds; a fresh process (or after that) refuses.
    assert await keys.verify(reverie.pool, created.key) is None
    listed = await keys.list_keys(reverie.pool, include_revoked=True, limit=100)
    row = next(k for k in listed.data if k.id == created.id)
    assert row.revoked_at is not None and not hasattr(row, "key")
    stored = await reverie.pool.fetchval(
        "SELECT secret_sha256 FROM api_keys WHERE id = $1", created.id
    )
    assert created.key.split(".", 1)[1].encode() not in bytes(stored)


async def test_errors_have_the_api_shape_and_status(api: Api) -> None:
    status, headers, body = await call(api, "GET", "/v1/agents/agent_missing")
    assert status == 404 and headers["request-id"].startswith("req_")
    assert_error(body, "not_found_error", "agent_missing")

    status, _, body = await call(api, "POST", "/v1/agents", data=b"{not json", headers=JSON)
    assert status == 400
    assert_error(body, "invalid_request_error", "not JSON")

    status, _, body = await call(api, "POST", "/v1/agents", json=[1, 2])
    assert status == 400
    assert_error(body, "invalid_request_error", "object")

    status, _, body = await call(api, "POST", "/v1/agents", json={"name": "x"})
    assert status == 400
    assert_error(body, "invalid_request_error", "model")

    deep = "[" * 100_000 + "]" * 100_000
    status, _, body = await call(api, "POST", "/v1/agents", data=deep.encode(), headers=JSON)
    assert status == 400
    assert_error(body, "invalid_request_error")

    status, _, body = await call(api, "GET", "/v1/agents?limit=abc")
    assert status == 400
    assert_error(body, "invalid_request_error", "limit")

    status, _, body = await call(api, "GET", "/v1/agents?limit=1000")
    assert status == 400
    assert_error(body, "invalid_request_error", "limit")

    status, _, body = await call(api, "GET", "/v1/nothing/here")
    assert status == 404
    assert_error(body, "not_found_error", "/v1/nothing/here")

    status, _, body = await call(api, "PUT", "/v1/agents")
    assert status == 405
    assert_error(body, "invalid_request_error", "PUT")


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/v1/skills", "skills"),
        ("/v1/deployments", "deployments"),
        ("/v1/files", "files"),
        ("/v1/vaults", "vaults"),
    ],
)
async def test_what_reverie_lacks_is_named_never_a_500(api: Api, path: str, named: str) -> None:
    for method in ("GET", "POST"):
        status, _, body = await call(api, method, path, json={})
        assert status == 400, (method, path, body)
        assert_error(body, "invalid_request_error", named, "not supported yet")


async def test_a_body_over_the_limit_is_refused_before_it_is_read(api: Api) -> None:
    huge = b'{"name": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    status, _, body = await call(api, "POST", "/v1/agents", data=huge, headers=JSON)
    assert status == 413
    assert_error(body, "request_too_large", "bytes")


async def test_too_many_events_in_one_request_is_a_clear_error(
    api: Api, reverie: ReverieClient
) -> None:
    agent = await reverie.create_agent({"name": "limits", "model": "fake-limits"})
    session = await reverie.create_session({"agent": agent.id})
    events = [{"type": "user.message", "content": "hi"}] * 51
    status, _, body = await call(
        api, "POST", f"/v1/sessions/{session.id}/events", json={"events": events}
    )
    assert status == 400
    assert_error(body, "invalid_request_error", "50")
    assert await reverie.list_events(session.id) == []


async def test_anthropic_headers_are_accepted(api: Api) -> None:
    status, _, body = await call(
        api,
        "GET",
        "/v1/environments",
        headers={"anthropic-version": "2023-06-01", "anthropic-beta": "managed-agents-2026-04-01"},
    )
    assert status == 200 and isinstance(body["data"], list)


async def test_health_needs_no_key(api: Api) -> None:
    status, _, body = await call(api, "GET", "/healthz", key=None)
    assert status == 200 and body == {"status": "ok"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/agents/agent_%00", None),
        ("GET", "/v1/agents/%2e%2e%2f%2e%2e%2fetc", None),
        ("GET", "/v1/agents?page=%00", None),
        ("GET", "/v1/agents?page=not-a-cursor", None),
        ("GET", "/v1/agents?limit=0", None),
        ("GET", "/v1/agents?limit=-5", None),
        ("GET", "/v1/agents?limit=99999999999999999999999", None),
        ("GET", "/v1/agents?include_archived=maybe", None),
        ("GET", "/v1/agents?created_at_gte=yesterday", None),
        ("GET", "/v1/agents?created_at_gte=2026-01-01T00:00:00", None),
        ("GET", "/v1/agents/agent_x?version=0", None),
        ("GET", "/v1/agents/agent_x?version=4294967296", None),
        ("GET", "/v1/sessions?statuses[]=sleeping", None),
        ("GET", "/v1/sessions?order=sideways", None),
        ("GET", "/v1/sessions?agent_id=%00", None),
        ("GET", "/v1/sessions/sesn_x/events?types[]=%00", None),
        ("GET", "/v1/sessions/sesn_x/events?page=p99999999999999", None),
        ("POST", "/v1/agents", {"name": "x\u0000", "model": "m"}),
        ("POST", "/v1/agents", {"name": "x", "model": "m", "metadata": {"k": 1}}),
        ("POST", "/v1/agents", {"name": "x", "model": "m", "unknown_field": True}),
        ("POST", "/v1/agents", {"name": "x" * 100_000, "model": "m"}),
        ("POST", "/v1/agents", {"name": "x", "model": {"id": 1e309}}),
        ("POST", "/v1/sessions", {"agent": {"type": "agent_with_overrides", "id": "agent_x"}}),
        ("POST", "/v1/sessions", {"agent": None, "environment_id": "env_default"}),
        ("POST", "/v1/sessions/sesn_x/events", {"events": "user.message"}),
        ("POST", "/v1/sessions/sesn_x/events", {"events": [], "extra": 1}),
        ("POST", "/v1/environments", {"name": "e", "config": {"type": "self_hosted"}}),
    ],
)
async def test_hostile_requests_get_a_clear_refusal_never_a_500(
    api: Api, method: str, path: str, body: object
) -> None:
    status, headers, answer = await call(api, method, path, json=body)
    assert 400 <= status < 500, (status, answer)
    assert answer["type"] == "error" and answer["error"]["message"], answer
    assert headers["request-id"].startswith("req_")


async def test_time_filters_take_both_sdks_spellings(api: Api, reverie: ReverieClient) -> None:
    agent = await reverie.create_agent({"name": "dated", "model": "fake-dated"})
    stamp = agent.created_at.isoformat().replace("+00:00", "Z")
    for query in (f"created_at_gte={stamp}", f"created_at[gte]={stamp}"):
        status, _, body = await call(api, "GET", f"/v1/agents?{query}&limit=100")
        assert status == 200 and agent.id in [a["id"] for a in body["data"]], query
    for query in (f"created_at_lte={stamp}", f"created_at[lte]={stamp}"):
        status, _, body = await call(api, "GET", f"/v1/agents?{query}&limit=100")
        assert status == 200 and agent.id in [a["id"] for a in body["data"]], query
    status, _, body = await call(
        api, "GET", f"/v1/agents?created_at_gte={stamp}&created_at[gte]={stamp}"
    )
    assert status == 400 and "not both" in body["error"]["message"]
    session = await reverie.create_session({"agent": agent.id})
    created = session.created_at.isoformat().replace("+00:00", "Z")
    later = f"created_at[gt]={created}"
    status, _, body = await call(api, "GET", f"/v1/sessions?agent_id={agent.id}&{later}")
    assert status == 200 and body["data"] == []
    status, _, body = await call(
        api, "GET", f"/v1/sessions?agent_id={agent.id}&created_at[gte]={stamp}"
    )
    assert [s["id"] for s in body["data"]] == [session.id]


async def test_concurrent_requests_with_one_key_share_one_verification(
    reverie: ReverieClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from reverie.api import auth

    created = await keys.create(reverie.pool, "busy", "tests")
    calls = 0
    real_verify = keys.verify

    async def counted(pool: object, presented: str) -> object:
        nonlocal calls
        calls += 1
        return await real_verify(pool, presented)  # type: ignore[arg-type]

    monkeypatch.setattr(auth.keys, "verify", counted)
    checker = auth.KeyChecker(reverie.pool)
    found = await asyncio.gather(*(checker.check(created.key) for _ in range(50)))
    assert {key.id for key in found} == {created.id}
    assert calls == 1
    with pytest.raises(auth.ApiError):
        await asyncio.gather(*(checker.check(created.key + "x") for _ in range(5)))
    assert calls == 2
