"""Agents: a versioned configuration of model, system prompt and tools."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from reverie.models.common import Metadata, StrictModel, patch_metadata

MAX_TOOLS = 128
# Versions are PostgreSQL integers: a larger number can name no version, and is refused as such.
MAX_VERSION = 2**31 - 1
MAX_NAME = 256
MAX_SYSTEM = 100_000

BUILTIN_TOOL_NAMES = ("bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search")
PermissionPolicy = Literal["always_allow", "always_ask"]


class ModelConfig(StrictModel):
    id: str = Field(min_length=1, max_length=256)
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    speed: Literal["standard", "fast"] | None = None


class ToolPolicy(StrictModel):
    type: PermissionPolicy


class BuiltinToolConfig(StrictModel):
    name: Literal["bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"]
    enabled: bool = True
    permission_policy: ToolPolicy | None = None


class ToolsetDefaultConfig(StrictModel):
    enabled: bool = True
    permission_policy: ToolPolicy = ToolPolicy(type="always_allow")


class AgentToolset(StrictModel):
    """`agent_toolset_20260401`: the built-in tools, each on or off with a permission policy."""

    type: Literal["agent_toolset_20260401"] = "agent_toolset_20260401"
    default_config: ToolsetDefaultConfig = ToolsetDefaultConfig()
    configs: list[BuiltinToolConfig] = []

    def resolved(self) -> dict[str, tuple[bool, PermissionPolicy]]:
        """Each built-in tool's (enabled, policy); omitted ones take the default config."""
        out = {
            name: (self.default_config.enabled, self.default_config.permission_policy.type)
            for name in BUILTIN_TOOL_NAMES
        }
        for config in self.configs:
            _, default_policy = out[config.name]
            policy = config.permission_policy.type if config.permission_policy else default_policy
            out[config.name] = (config.enabled, policy)
        return out


class CustomTool(StrictModel):
    """A tool the client's own code runs; the session waits for its result."""

    type: Literal["custom"] = "custom"
    name: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str = Field(default="", max_length=10_000)
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class McpToolset(StrictModel):
    type: Literal["mcp_toolset"] = "mcp_toolset"
    mcp_server_name: str


Tool = Annotated[AgentToolset | CustomTool | McpToolset, Field(discriminator="type")]


def _model_from_string(value: Any) -> Any:
    return {"id": value} if isinstance(value, str) else value


class AgentConfig(StrictModel):
    """The part of an agent that versions: any change to it makes a new version."""

    name: str = Field(min_length=1, max_length=MAX_NAME)
    description: str | None = Field(default=None, max_length=2048)
    system: str | None = Field(default=None, max_length=MAX_SYSTEM)
    model: ModelConfig
    tools: list[Tool] = Field(default_factory=list, max_length=MAX_TOOLS)
    mcp_servers: list[dict[str, Any]] = []
    skills: list[dict[str, Any]] = []
    multiagent: dict[str, Any] | None = None
    metadata: Metadata = Field(default_factory=dict)

    _coerce_model = field_validator("model", mode="before")(_model_from_string)

    @field_validator("system", mode="after")
    @classmethod
    def _empty_system_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _unique_tool_names(self) -> AgentConfig:
        names = [tool.name for tool in self.tools if isinstance(tool, CustomTool)]
        if len(names) != len(set(names)):
            raise ValueError("custom tool names must be unique")
        if sum(isinstance(tool, AgentToolset) for tool in self.tools) > 1:
            raise ValueError("at most one agent_toolset_20260401 entry is allowed")
        clashing = set(names) & set(BUILTIN_TOOL_NAMES)
        if clashing and any(isinstance(tool, AgentToolset) for tool in self.tools):
            raise ValueError(f"custom tools clash with built-in tool names: {sorted(clashing)}")
        return self


class AgentCreate(AgentConfig):
    pass


class AgentUpdate(StrictModel):
    """A partial update: omitted fields stay; `metadata` is patched key by key (None deletes)."""

    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    description: str | None = None
    system: str | None = None
    model: ModelConfig | None = None
    tools: list[Tool] | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    skills: list[dict[str, Any]] | None = None
    multiagent: dict[str, Any] | None = None
    metadata: dict[str, str | None] | None = None

    _coerce_model = field_validator("model", mode="before")(_model_from_string)

    def apply_to(self, current: AgentConfig) -> AgentConfig:
        """The configuration this update produces; validated as a whole like a create."""
        merged = current.model_dump(include=set(AgentConfig.model_fields))
        changes = self.model_dump(exclude_unset=True, exclude={"version", "metadata"})
        merged.update(changes)
        if self.metadata is not None:
            merged["metadata"] = patch_metadata(current.metadata, self.metadata)
        return AgentConfig.model_validate(merged)


class Agent(AgentConfig):
    type: Literal["agent"] = "agent"
    id: str
    version: int
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


class AgentRef(StrictModel):
    """`{type: "agent", id, version}` pins a version; a bare id means the latest."""

    type: Literal["agent"] = "agent"
    id: str
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)


class AgentVersionsPage(BaseModel):
    data: list[Agent]


def check_supported(config: AgentConfig) -> None:
    """Refuse, clearly, the parts of the hosted API that Reverie has not built yet."""
    from reverie.models.errors import NotSupportedError

    for tool in config.tools:
        if isinstance(tool, McpToolset):
            raise NotSupportedError("mcp_toolset tools are not supported yet")
        if isinstance(tool, AgentToolset) and tool.resolved()["web_search"][0]:
            raise NotSupportedError(
                "web_search needs a search provider, and none is configured in Reverie: "
                "disable it with configs: [{name: web_search, enabled: false}]"
            )
    if config.mcp_servers:
        raise NotSupportedError("mcp_servers are not supported yet")
    if config.skills:
        raise NotSupportedError("skills are not supported yet")
    if config.multiagent:
        raise NotSupportedError("multiagent (coordinator) agents are not supported yet")
