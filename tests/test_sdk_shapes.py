"""Every object Reverie produces fits the official SDK's type, field for field.

Agents (the plain toolset, resolved configs, custom tools, versions), environments (the
default one too, deletion), sessions, and every event a real session records (built-in tool
uses allowed, asked and denied, a confirmation each way, a custom tool, a web search without a
provider, a retried model error, a refusal, an interrupt, a terminal error, termination),
dumped as the HTTP API dumps them and checked with `tests.sdk_conformance.assert_fits`.
"""

from __future__ import annotations

from typing import Any

from anthropic.types.beta import (
    BetaEnvironment,
    BetaEnvironmentDeleteResponse,
    BetaManagedAgentsAgent,
    BetaManagedAgentsSession,
)
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent
from pydantic import BaseModel

from reverie.models.events import Event
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_each_once
from tests.sdk_conformance import assert_fits

SEARCHLESS = "no search provider is configured"
CUSTOM = {
    "type": "custom",
    "name": "lookup",
    "description": "Looks a word up in the client's dictionary.",
    "input_schema": {
        "type": "object",
        "properties": {"word": {"type": "string"}},
        "required": ["word"],
    },
}
TOOLSET = {
    "type": "agent_toolset_20260401",
    "configs": [
        {"name": "glob", "permission_policy": {"type": "always_ask"}},
        {"type": "edit", "name": "edit", "enabled": False},
    ],
}


def dump(value: BaseModel) -> Any:
    return value.model_dump(mode="json")


async def test_agents_fit(reverie: ReverieClient, model_name: str) -> None:
    plain = await reverie.create_agent(
        {"name": "plain", "model": model_name, "tools": [{"type": "agent_toolset_20260401"}]}
    )
    bare = await reverie.create_agent({"name": "bare", "model": model_name})
    configured = await reverie.create_agent(
        {
            "name": "configured",
            "description": "all the options",
            "system": "Be brief.",
            "model": {"id": model_name, "effort": "high", "speed": "standard"},
            "tools": [
                {
                    "type": "agent_toolset_20260401",
                    "default_config": {"permission_policy": {"type": "always_ask"}},
                    "configs": [
                        {"name": "bash", "enabled": False},
                        {"name": "read", "permission_policy": {"type": "always_allow"}},
                        {"name": "web_search"},
                    ],
                },
                CUSTOM,
            ],
            "metadata": {"team": "shapes"},
            "execution_identity": {"type": "service_account"},
        }
    )
    updated = await reverie.update_agent(
        configured.id, {"model": {"id": model_name, "speed": "fast"}}
    )
    versions = await reverie.agent_versions(configured.id)
    listed = await reverie.list_agents(limit=100)
    for agent in [plain, bare, configured, updated, *versions, *listed.data]:
        assert_fits(dump(agent), BetaManagedAgentsAgent)

    shown = dump(configured)
    assert shown["execution_identity"] == {"type": "service_account"}
    assert shown["mcp_servers"] == [] and shown["skills"] == [] and shown["multiagent"] is None
    assert shown["model"]["effort"] == {"type": "high"}
    toolset, custom = shown["tools"]
    assert toolset["default_config"] == {
        "enabled": True,
        "permission_policy": {"type": "always_ask"},
    }
    assert toolset["configs"] == [
        {
            "type": "bash",
            "name": "bash",
            "enabled": False,
            "permission_policy": {"type": "always_ask"},
        },
        {
            "type": "read",
            "name": "read",
            "enabled": True,
            "permission_policy": {"type": "always_allow"},
        },
        {
            "type": "web_search",
            "name": "web_search",
            "enabled": True,
            "permission_policy": {"type": "always_ask"},
        },
    ]
    assert custom == CUSTOM
    assert dump(plain)["tools"] == [
        {
            "type": "agent_toolset_20260401",
            "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
            "configs": [],
        }
    ]
    # Model options an update leaves out keep their values.
    assert updated.version == 2
    assert dump(updated)["model"] == {
        "id": model_name,
        "effort": {"type": "high"},
        "speed": "fast",
        "inference_geo": None,
    }
    # The SDK reads what Reverie answers, to the same values.
    parsed = BetaManagedAgentsAgent.model_validate(shown)
    assert parsed.tools[0].configs[0].permission_policy.type == "always_ask"  # type: ignore[union-attr]


async def test_environments_fit(reverie: ReverieClient) -> None:
    default = await reverie.get_environment("env_default")
    assert dump(default)["config"] == {
        "type": "cloud",
        "networking": {
            "type": "limited",
            "allowed_hosts": [],
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
    }
    limited = await reverie.create_environment(
        {
            "name": "limited",
            "description": "docs and registries",
            "scope": "organization",
            "config": {
                "type": "cloud",
                "networking": {
                    "type": "limited",
                    "allowed_hosts": ["docs.example.com"],
                    "allow_package_managers": True,
                },
            },
            "metadata": {"k": "v"},
        }
    )
    open_env = await reverie.create_environment(
        {"name": "open", "config": {"type": "cloud", "networking": {"type": "unrestricted"}}}
    )
    renamed = await reverie.update_environment(limited.id, {"name": "renamed"})
    spare = await reverie.create_environment({"name": "spare"})
    deleted = await reverie.delete_environment(spare.id)
    listed = await reverie.list_environments(limit=100)
    for environment in [default, limited, open_env, renamed, *listed.data]:
        assert_fits(dump(environment), BetaEnvironment)
    assert_fits(dump(deleted), BetaEnvironmentDeleteResponse)
    assert dump(renamed)["config"] == dump(limited)["config"]  # omitted config is kept
    assert dump(open_env)["scope"] == "organization"


async def test_a_session_and_every_event_it_records_fit(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    thinking = {"type": "thinking", "thinking": "Where to start?", "signature": "sig"}
    refusal = {"type": "refusal", "category": "cyber", "explanation": "Not this one."}
    fake_model.script(
        model_name,
        [
            Reply(
                [
                    thinking,
                    {"type": "text", "text": "Let me look."},
                    {
                        "type": "tool_use",
                        "id": "toolu_write",
                        "name": "write",
                        "input": {"file_path": "notes.md", "content": "# Notes\n"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_read",
                        "name": "read",
                        "input": {"file_path": "missing.md"},
                    },
                ],
                "tool_use",
            ),
            Reply.tool_use("web_search", {"query": "durable execution"}),
            Reply.tool_use(
                "edit", {"file_path": "notes.md", "old_string": "#", "new_string": "##"}
            ),
            Reply.tool_use("glob", {"pattern": "*.md"}),
            Reply.tool_use("glob", {"pattern": "*"}),
            Reply.tool_use("lookup", {"word": "reverie"}),
            Reply.error(529, retry_after=0),
            Reply.text("All done."),
            Reply(
                [{"type": "text", "text": "I can't help with that."}],
                "refusal",
                stop_details=refusal,
            ),
            Reply.error(400, message="messages: roles must alternate"),
        ],
    )
    agent = await reverie.create_agent(
        {"name": "shapes", "model": model_name, "tools": [TOOLSET, CUSTOM]}
    )
    session = await reverie.create_session({"agent": agent.id, "title": "shapes"})
    assert_fits(dump(session), BetaManagedAgentsSession)
    echoes: list[Event] = []

    echoes += await reverie.send_events(
        session.id, [{"type": "user.message", "content": [{"type": "text", "text": "start"}]}]
    )
    first_glob = await _awaited(reverie, session.id)
    echoes += await reverie.send_events(
        session.id,
        [{"type": "user.tool_confirmation", "tool_use_id": first_glob, "result": "allow"}],
    )
    second_glob = await _awaited(reverie, session.id)
    echoes += await reverie.send_events(
        session.id,
        [
            {
                "type": "user.tool_confirmation",
                "tool_use_id": second_glob,
                "result": "deny",
                "deny_message": "not everything",
            }
        ],
    )
    lookup = await _awaited(reverie, session.id)
    echoes += await reverie.send_events(
        session.id,
        [
            {
                "type": "user.custom_tool_result",
                "custom_tool_use_id": lookup,
                "content": [{"type": "text", "text": "a daydream"}],
            }
        ],
    )
    idle = await reverie.wait_until_settled(session.id, timeout=60)
    assert_fits(dump(idle), BetaManagedAgentsSession)
    echoes.append(await reverie.send_message(session.id, "something else"))
    await reverie.wait_until_settled(session.id, timeout=30)
    echoes.append(await reverie.interrupt(session.id))
    echoes.append(await reverie.send_message(session.id, "one more"))
    ended = await reverie.wait_until_settled(session.id, timeout=30)
    assert ended.status == "terminated"

    events = await all_events(reverie, session.id)
    assert_each_once(events)
    for event in [*echoes, *events]:
        assert_fits(dump(event), BetaManagedAgentsSessionEvent)
    assert {e.type for e in events} >= {
        "user.message",
        "user.tool_confirmation",
        "user.custom_tool_result",
        "user.interrupt",
        "agent.thinking",
        "agent.message",
        "agent.tool_use",
        "agent.tool_result",
        "agent.custom_tool_use",
        "session.status_running",
        "session.status_idle",
        "session.status_rescheduled",
        "session.status_terminated",
        "session.error",
        "span.model_request_start",
        "span.model_request_end",
    }

    uses = [e.payload for e in events if e.type == "agent.tool_use"]
    judged = [(u["name"], u["evaluated_permission"], u.get("evaluation")) for u in uses]
    assert judged == [
        ("write", "allow", {"type": "always_allow"}),
        ("read", "allow", {"type": "always_allow"}),
        ("web_search", "allow", {"type": "always_allow"}),
        ("edit", "deny", None),  # disabled: refused before any policy applies
        ("glob", "ask", {"type": "always_ask"}),
        ("glob", "ask", {"type": "always_ask"}),
    ]
    results = {e.payload["tool_use_id"]: e.payload for e in events if e.type == "agent.tool_result"}
    search = next(
        e for e in events if e.type == "agent.tool_use" and e.payload["name"] == "web_search"
    )
    assert results[search.id]["is_error"] and SEARCHLESS in results[search.id]["content"][0]["text"]
    idles = [e.payload for e in events if e.type == "session.status_idle"]
    assert {"type": "refusal"} in [i["stop_reason"] for i in idles]
    assert any(i.get("stop_details") == refusal for i in idles)
    errors = [e.payload["error"] for e in events if e.type == "session.error"]
    assert [(e["type"], e["retry_status"]["type"]) for e in errors] == [
        ("model_overloaded_error", "retrying"),
        ("model_request_failed_error", "terminal"),
    ]
    final = await reverie.get_session(session.id)
    assert_fits(dump(final), BetaManagedAgentsSession)
    assert dump(final)["agent"] == {
        key: value
        for key, value in dump(agent).items()
        if key not in ("metadata", "created_at", "updated_at", "archived_at")
    }
    usage = dump(final)["usage"]
    assert usage["cache_creation"]["ephemeral_1h_input_tokens"] == 0
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    for listed in (await reverie.list_sessions(limit=100)).data:
        assert_fits(dump(listed), BetaManagedAgentsSession)


async def _awaited(reverie: ReverieClient, session_id: str) -> str:
    """The one event id the session, idle with `requires_action`, waits on."""
    await reverie.wait_until_settled(session_id, timeout=30)
    idle = (await reverie.list_events(session_id, types=["session.status_idle"], limit=10_000))[-1]
    assert idle.payload["stop_reason"]["type"] == "requires_action", idle.payload
    (event_id,) = idle.payload["stop_reason"]["event_ids"]
    return event_id
