"""The strict SDK shape checker itself: it must catch what `model_validate` lets through."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from anthropic.types.beta import BetaEnvironment, BetaManagedAgentsAgent
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent

from tests.sdk_conformance import SdkMismatch, assert_fits, problems

AGENT: dict[str, Any] = {
    "type": "agent",
    "id": "agent_01",
    "name": "a",
    "description": None,
    "system": None,
    "model": {"id": "claude-sonnet-4-6", "effort": {"type": "high"}, "speed": "standard"},
    "tools": [
        {
            "type": "agent_toolset_20260401",
            "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
            "configs": [
                {
                    "type": "bash",
                    "name": "bash",
                    "enabled": True,
                    "permission_policy": {"type": "always_ask"},
                }
            ],
        },
        {
            "type": "custom",
            "name": "lookup",
            "description": "looks up",
            "input_schema": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    ],
    "mcp_servers": [],
    "skills": [],
    "multiagent": None,
    "metadata": {"k": "v"},
    "execution_identity": {"type": "service_account"},
    "version": 1,
    "created_at": "2026-01-02T03:04:05.123456Z",
    "updated_at": "2026-01-02T03:04:05+00:00",
    "archived_at": None,
}


def test_a_fitting_agent_passes() -> None:
    assert_fits(AGENT, BetaManagedAgentsAgent)
    assert_fits([AGENT, AGENT], list[BetaManagedAgentsAgent])


def _broken(**changes: Any) -> dict[str, Any]:
    agent = copy.deepcopy(AGENT)
    for path, value in changes.items():
        target: Any = agent
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return agent


_DELETE = object()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"execution_identity": _DELETE}, "$.execution_identity: missing"),
        ({"version": "1"}, "$.version: expected integer, got '1'"),
        ({"version": True}, "$.version: expected integer, got True"),
        ({"created_at": "2026-01-02T03:04:05"}, "$.created_at: expected an RFC 3339"),
        ({"created_at": 1767322000}, "$.created_at: expected an RFC 3339"),
        ({"id": "ag_1"}, "$.id: id 'ag_1' of a 'agent' lacks the prefix 'agent_'"),
        ({"type": "agents"}, "$.type: 'agents' is not one of ['agent']"),
        ({"model__effort": "high"}, "$.model.effort: expected object, got 'high'"),
        (
            {"tools__0__configs__0__type": _DELETE},
            "$.tools[0].configs[0]: missing discriminator 'type'",
        ),
        (
            {"tools__0__configs__0__permission_policy__type": "allow"},
            "$.tools[0].configs[0].permission_policy.type: 'allow' is not one of",
        ),
        ({"tools__1__description": None}, "$.tools[1].description: expected string, got None"),
        ({"tools__0__type": "toolset"}, "$.tools[0].type: 'toolset' is not one of"),
        ({"mcp_servers": None}, "$.mcp_servers: expected array, got None"),
        ({"metadata__k": 3}, "$.metadata.k: expected string, got 3"),
        ({"surprise": 1}, "$.surprise: not a field of BetaManagedAgentsAgent"),
    ],
)
def test_each_divergence_is_reported_with_its_path(changes: dict[str, Any], expected: str) -> None:
    data = _broken(**changes)
    with pytest.raises(SdkMismatch) as raised:
        assert_fits(data, BetaManagedAgentsAgent)
    assert any(p.startswith(expected) for p in raised.value.problems), raised.value.problems


def test_every_problem_is_reported_at_once() -> None:
    data = _broken(execution_identity=_DELETE, version="1", skills=None)
    found = problems(data, BetaManagedAgentsAgent)
    assert len(found) == 3, found


def test_model_validate_alone_would_have_passed_these() -> None:
    """Why this module exists: pydantic coerces and accepts extras."""
    lenient = _broken(version="1", created_at="2026-01-02T03:04:05", surprise=1)
    BetaManagedAgentsAgent.model_validate(lenient)
    assert len(problems(lenient, BetaManagedAgentsAgent)) == 3


def test_extras_may_be_named() -> None:
    data = _broken(surprise=1)
    assert_fits(data, BetaManagedAgentsAgent, allow_extra={"surprise"})
    assert_fits(data, BetaManagedAgentsAgent, allow_extra=True)
    assert problems(data, BetaManagedAgentsAgent, allow_extra={"other"})


def test_open_sdk_models_accept_extras() -> None:
    """A custom tool's input schema is any JSON schema (the SDK declares extras)."""
    assert_fits(AGENT, BetaManagedAgentsAgent)  # additionalProperties in input_schema


def test_union_events_resolve_by_type_and_check_reference_prefixes() -> None:
    event = {
        "type": "agent.tool_result",
        "id": "sevt_1",
        "processed_at": "2026-01-02T03:04:05Z",
        "tool_use_id": "sevt_0",
        "content": [{"type": "text", "text": "ok"}],
        "is_error": False,
    }
    assert_fits(event, BetaManagedAgentsSessionEvent)
    bad = dict(event, tool_use_id="toolu_1", id="evt_1")
    found = problems(bad, BetaManagedAgentsSessionEvent)
    assert any("tool_use_id" in p and "'sevt_'" in p for p in found), found
    assert any(p.startswith("$.id:") for p in found), found
    unknown = dict(event, type="agent.nope")
    assert problems(unknown, BetaManagedAgentsSessionEvent)[0].startswith("$.type: 'agent.nope'")


def test_environment_shape() -> None:
    env = {
        "type": "environment",
        "id": "env_default",
        "name": "default",
        "description": "",
        "config": {
            "type": "cloud",
            "networking": {
                "type": "limited",
                "allowed_hosts": ["example.com"],
                "allow_mcp_servers": False,
                "allow_package_managers": False,
            },
            "packages": {
                "type": "packages",
                "apt": [],
                "cargo": [],
                "gem": [],
                "go": [],
                "npm": [],
                "pip": [],
            },
        },
        "metadata": {},
        "scope": "organization",
        "created_at": "2026-01-02T03:04:05Z",
        "updated_at": "2026-01-02T03:04:05Z",
        "archived_at": None,
    }
    found = problems(env, BetaEnvironment)
    assert found == [], found
    env["config"]["networking"] = {"type": "limited"}
    found = problems(env, BetaEnvironment)
    assert any("allowed_hosts: missing" in p for p in found), found


def _example(ann: Any, field: str = "", depth: int = 0) -> Any:
    """A value built from an annotation (first literal, first union member): walks every type."""
    import datetime as dt
    import typing

    import pydantic

    from tests.sdk_conformance import ID_PREFIX_BY_FIELD, ID_PREFIX_BY_TYPE

    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, __import__("types").UnionType):
        members = [a for a in args if a is not type(None)]
        return _example(members[0], field, depth) if members else None
    if origin is list:
        return [_example(args[0], field, depth + 1)] if depth < 6 else []
    if origin is dict:
        return {"k": _example(args[1], "", depth + 1)} if depth < 6 else {}
    if isinstance(ann, type) and issubclass(ann, pydantic.BaseModel):
        out = {}
        for name, info in ann.model_fields.items():
            inner = info.annotation
            if info.metadata:
                inner = typing.Annotated[(inner, *info.metadata)]
            out[info.alias or name] = _example(inner, info.alias or name, depth + 1)
        kind = out.get("type")
        if "id" in out and isinstance(kind, str):
            out["id"] = ("sevt_" if "." in kind else ID_PREFIX_BY_TYPE.get(kind, "")) + "x"
        return out
    if ann is str:
        return ID_PREFIX_BY_FIELD.get(field, "") + "x"
    if ann is dt.datetime:
        return "2026-01-02T03:04:05Z"
    if ann is dt.date:
        return "2026-01-02"
    return {bool: True, int: 1, float: 1.5}.get(ann, {})


def _all_sdk_models() -> list[Any]:
    import inspect

    import anthropic.types.beta as beta
    import anthropic.types.beta.sessions as sessions
    import pydantic

    found = []
    for module in (beta, sessions):
        for _, value in inspect.getmembers(module):
            if inspect.isclass(value) and issubclass(value, pydantic.BaseModel):
                found.append(value)
    return found


def test_the_checker_walks_every_beta_response_type() -> None:
    """Every annotation the SDK uses is understood, and a value built from it fits."""
    models = _all_sdk_models()
    assert len(models) > 300
    for model in models:
        example = _example(model)
        found = problems(example, model)
        assert found == [], (model.__name__, found)
    assert_fits([_example(BetaManagedAgentsSessionEvent)], list[BetaManagedAgentsSessionEvent])


def test_reverie_additions_are_declared_per_sdk_model() -> None:
    from anthropic.types.beta import BetaManagedAgentsSessionStats

    stats = {"active_seconds": 1.0, "duration_seconds": 2.0, "turns": 1}
    assert_fits(stats, BetaManagedAgentsSessionStats)
    found = problems(stats, BetaManagedAgentsSessionStats, reverie_additions=False)
    assert found == ["$.turns: not a field of BetaManagedAgentsSessionStats"]
    assert problems({**stats, "other": 1}, BetaManagedAgentsSessionStats)
