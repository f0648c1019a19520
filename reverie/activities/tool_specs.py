"""What the model is told about an agent's tools, and how each tool use is to be handled."""

from __future__ import annotations

from functools import cache
from typing import Any, Literal, NamedTuple

from reverie.models.agents import Agent, AgentToolset, CustomTool
from reverie.models.threads import DELEGATION_TOOLS

ToolKind = Literal["builtin", "custom", "delegate"]
Permission = Literal["allow", "ask", "deny"]

WEB_FETCH = {
    "name": "web_fetch",
    "description": (
        "Fetch a URL over HTTP(S) and return its content as text. Only hosts the session's "
        "environment allows can be reached."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "The http:// or https:// URL to fetch."},
            "max_length": {
                "type": "integer",
                "description": "Cut the text after this many characters.",
            },
        },
        "required": ["url"],
    },
}


WEB_SEARCH = {
    "name": "web_search",
    "description": (
        "Search the web and return the top results (title, URL, snippet) as text. Follow up "
        "with web_fetch to read a result, where the session's environment allows it."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to search for."},
            "max_results": {
                "type": "integer",
                "description": "How many results to return (default 10, at most 50).",
            },
        },
        "required": ["query"],
    },
}


@cache
def _sdk_definitions() -> dict[str, dict[str, Any]]:
    """The SDK's own schemas of the file tools and bash, so inputs match the hosted product's."""
    from anthropic.lib.tools.agent_toolset import AgentToolContext, beta_agent_toolset_20260401

    tools = beta_agent_toolset_20260401(AgentToolContext(workdir="/"))
    definitions = {tool.name: tool.to_dict() for tool in tools}
    definitions["web_fetch"] = WEB_FETCH
    definitions["web_search"] = WEB_SEARCH
    return definitions


def _toolset(agent: Agent) -> AgentToolset | None:
    return next((t for t in agent.tools if isinstance(t, AgentToolset)), None)


def tool_definitions(agent: Agent) -> list[dict[str, Any]]:
    """The `tools` of a Messages API request: enabled built-ins, then custom tools."""
    definitions: list[dict[str, Any]] = []
    toolset = _toolset(agent)
    if toolset is not None:
        sdk = _sdk_definitions()
        for name, (enabled, _) in toolset.resolved().items():
            if enabled and name in sdk:
                definitions.append(dict(sdk[name]))
    for tool in agent.tools:
        if isinstance(tool, CustomTool):
            definitions.append(
                {
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.input_schema,
                }
            )
    return definitions


def _builtin(agent: Agent, name: str) -> tuple[bool, str]:
    """(enabled, policy) of a built-in tool; a name the toolset does not offer is disabled."""
    toolset = _toolset(agent)
    if toolset is None:
        return False, "always_allow"
    return toolset.resolved().get(name, (False, "always_allow"))


def builtin_enabled(agent: Agent, name: str) -> bool:
    return _builtin(agent, name)[0]


class Handling(NamedTuple):
    """How a tool use is handled, as `agent.tool_use` records it: `evaluated_permission` and
    the policy (`evaluation`) that produced it; a tool the agent does not offer is denied
    before any policy applies (its run records an error result)."""

    kind: ToolKind
    permission: Permission
    policy: str | None


def handling(agent: Agent, name: str, delegates: bool = False) -> Handling:
    """Custom tools go to the client; built-ins run at once or wait for a confirmation; a
    coordinator's delegation tools (`delegates`: its primary thread only) are the workflow's."""
    if delegates and name in DELEGATION_TOOLS:
        return Handling("delegate", "allow", None)
    if any(isinstance(t, CustomTool) and t.name == name for t in agent.tools):
        return Handling("custom", "allow", None)
    enabled, policy = _builtin(agent, name)
    if not enabled:
        return Handling("builtin", "deny", None)
    return Handling("builtin", "ask" if policy == "always_ask" else "allow", policy)
