"""Agents: a versioned configuration of model, system prompt and tools.

The shapes are the SDK's (`anthropic.types.beta.BetaManagedAgentsAgent` for answers,
`agent_create_params` / `agent_update_params` for requests), so the store, the client, the
command line and the HTTP API speak one vocabulary. A request may leave things out that an
answer always carries (a tool config's `type`, `enabled` and `permission_policy`, the toolset's
`default_config`, `execution_identity`); validation fills them in, so what is stored, and
every answer, is the resolved shape. Validating a resolved agent again changes nothing, and an
agent stored by older code (configs without `type`, `effort` as a bare string) reads back in the
resolved shape too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from reverie.models.common import STORED, Metadata, StrictModel, patch_metadata

MAX_TOOLS = 128
# Versions are PostgreSQL integers: a larger number can name no version, and is refused as such.
MAX_VERSION = 2**31 - 1
MAX_NAME = 256
MAX_SYSTEM = 100_000

BuiltinToolName = Literal[
    "bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search"
]
BUILTIN_TOOL_NAMES: tuple[str, ...] = (
    "bash",
    "read",
    "write",
    "edit",
    "glob",
    "grep",
    "web_fetch",
    "web_search",
)
# `auto` is the SDK's third policy (the server judges each call); Reverie refuses it for now.
PermissionPolicyType = Literal["always_allow", "always_ask", "auto"]
EffortLevel = Literal["low", "medium", "high", "xhigh", "max"]


class PermissionPolicy(StrictModel):
    """`{"type": "always_allow"}` (run at once) or `{"type": "always_ask"}` (wait for a
    `user.tool_confirmation`)."""

    type: PermissionPolicyType


ALWAYS_ALLOW = PermissionPolicy(type="always_allow")


class Effort(StrictModel):
    type: EffortLevel


class ModelConfig(StrictModel):
    """`{id, effort?, speed?}`. A request may send `effort` as a bare level (`"high"`) or as
    `{"type": "high"}`; the answer always carries the object, or null when none was chosen (the
    model then works at its own default, which Reverie does not guess)."""

    id: str = Field(min_length=1, max_length=256)
    effort: Effort | None = None
    speed: Literal["standard", "fast"] | None = None
    inference_geo: str | None = Field(default=None, max_length=64)

    @field_validator("effort", mode="before")
    @classmethod
    def _effort_level(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value


_TOOL_OPTIONS = (
    "allowed_domains",
    "blocked_domains",
    "user_location",
    "url_sources",
    "max_content_tokens",
)


class BuiltinToolConfig(StrictModel):
    """One built-in tool's override. A request may omit `type` (it is the tool's name),
    `enabled` and `permission_policy` (both then come from the toolset's `default_config`);
    the stored and answered config has all four."""

    type: BuiltinToolName | None = None
    name: BuiltinToolName
    enabled: bool | None = None
    permission_policy: PermissionPolicy | None = None
    # web_fetch / web_search options of the SDK, refused by `check_supported` when set.
    allowed_domains: list[str] | None = None
    blocked_domains: list[str] | None = None
    user_location: dict[str, Any] | None = None
    url_sources: dict[str, Any] | None = None
    max_content_tokens: int | None = None

    @model_serializer(mode="wrap")
    def _without_unset_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The SDK's config of one tool has only that tool's options: leave out unset ones."""
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k not in _TOOL_OPTIONS}

    @model_validator(mode="after")
    def _type_is_the_name(self) -> BuiltinToolConfig:
        if self.type is None:
            self.type = self.name
        elif self.type != self.name:
            raise ValueError(f"a tool config of type {self.type!r} must be named {self.type!r}")
        return self

    def unsupported_options(self) -> list[str]:
        return [option for option in _TOOL_OPTIONS if getattr(self, option) is not None]


class ToolsetDefaultConfig(StrictModel):
    """What every built-in tool gets unless its own config says otherwise."""

    enabled: bool = True
    permission_policy: PermissionPolicy = ALWAYS_ALLOW

    @field_validator("enabled", mode="before")
    @classmethod
    def _null_enabled(cls, value: Any) -> Any:
        return True if value is None else value

    @field_validator("permission_policy", mode="before")
    @classmethod
    def _null_policy(cls, value: Any) -> Any:
        return ALWAYS_ALLOW if value is None else value


class AgentToolset(StrictModel):
    """`agent_toolset_20260401`: the built-in tools, each on or off with a permission policy.

    Only the tools a client configured are listed in `configs`, each resolved against
    `default_config`; a tool not listed takes `default_config` as it is.
    """

    type: Literal["agent_toolset_20260401"] = "agent_toolset_20260401"
    default_config: ToolsetDefaultConfig = ToolsetDefaultConfig()
    configs: list[BuiltinToolConfig] = []

    @field_validator("default_config", mode="before")
    @classmethod
    def _null_default(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _resolve(self) -> AgentToolset:
        names = [config.name for config in self.configs]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"each tool may be configured once; repeated: {duplicated}")
        for config in self.configs:
            if config.enabled is None:
                config.enabled = self.default_config.enabled
            if config.permission_policy is None:
                config.permission_policy = self.default_config.permission_policy
        return self

    def resolved(self) -> dict[str, tuple[bool, str]]:
        """Each built-in tool's (enabled, policy type); omitted ones take the default config."""
        default = (self.default_config.enabled, self.default_config.permission_policy.type)
        out = dict.fromkeys(BUILTIN_TOOL_NAMES, default)
        for config in self.configs:
            policy = config.permission_policy or self.default_config.permission_policy
            enabled = self.default_config.enabled if config.enabled is None else config.enabled
            out[config.name] = (enabled, policy.type)
        return out

    def policies(self) -> set[str]:
        return {policy for _, policy in self.resolved().values()}


def _object_schema(value: Any) -> Any:
    """A custom tool's input schema is a JSON schema of an object (the SDK's and the Messages
    API's rule). One stored by older code without `type` reads back with `"type": "object"`."""
    if isinstance(value, dict) and "type" not in value:
        return {"type": "object", **value}
    return value


class CustomTool(StrictModel):
    """A tool the client's own code runs; the session waits for its result."""

    type: Literal["custom"] = "custom"
    name: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str = Field(default="", max_length=10_000)
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})

    _schema_type = field_validator("input_schema", mode="before")(_object_schema)

    @field_validator("input_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if (info.context or {}).get("stored"):
            return value  # checked when it was written; an older rule must not hide the agent
        if value.get("type") != "object":
            raise ValueError('input_schema must describe an object: {"type": "object", ...}')
        if not isinstance(value.get("properties", {}) or {}, dict):
            raise ValueError("input_schema.properties must be an object")
        required = value.get("required", []) or []
        if not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
            raise ValueError("input_schema.required must be a list of property names")
        return value


class McpToolset(StrictModel):
    """Accepted in shape only: `check_supported` refuses it until Reverie speaks MCP."""

    type: Literal["mcp_toolset"] = "mcp_toolset"
    mcp_server_name: str
    default_config: dict[str, Any] | None = None
    configs: list[dict[str, Any]] = []


Tool = Annotated[AgentToolset | CustomTool | McpToolset, Field(discriminator="type")]


class ServiceAccountIdentity(StrictModel):
    """Runs act as the worker's own identity: the only execution identity Reverie has."""

    type: Literal["service_account"] = "service_account"


class AwsRoleIdentity(StrictModel):
    """Accepted in shape only: `check_supported` refuses it."""

    type: Literal["aws_role"] = "aws_role"
    role_arn: str = Field(min_length=1, max_length=2048)


ExecutionIdentity = Annotated[ServiceAccountIdentity | AwsRoleIdentity, Field(discriminator="type")]
SERVICE_ACCOUNT = ServiceAccountIdentity()


def _model_from_string(value: Any) -> Any:
    return {"id": value} if isinstance(value, str) else value


def _identity_default(value: Any) -> Any:
    return SERVICE_ACCOUNT if value is None else value


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
    execution_identity: ExecutionIdentity = SERVICE_ACCOUNT

    _coerce_model = field_validator("model", mode="before")(_model_from_string)
    _identity = field_validator("execution_identity", mode="before")(_identity_default)

    @field_validator("mcp_servers", "skills", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("system", "description", mode="after")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        """`""` clears a text field: it reads back as null (as the hosted API answers)."""
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
    """A partial update: omitted fields stay; `metadata` is patched key by key (None deletes);
    `tools`, `mcp_servers` and `skills` are replaced whole (null clears them)."""

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
    execution_identity: ExecutionIdentity | None = None

    _coerce_model = field_validator("model", mode="before")(_model_from_string)

    def apply_to(self, current: AgentConfig) -> AgentConfig:
        """The configuration this update produces; validated as a whole like a create."""
        merged = current.model_dump(include=set(AgentConfig.model_fields))
        changes = self.model_dump(exclude_unset=True, exclude={"version", "metadata"})
        if "tools" in changes and changes["tools"] is None:
            changes["tools"] = []
        if self.model is not None:
            # Model options left out keep their stored values (the SDK documents it for
            # `effort`); a bare model id changes only the id.
            changes["model"] = {
                **merged["model"],
                **self.model.model_dump(include=self.model.model_fields_set),
            }
        merged.update(changes)
        if self.metadata is not None:
            merged["metadata"] = patch_metadata(current.metadata, self.metadata)
        return AgentConfig.model_validate(merged)


class Agent(AgentConfig):
    """`BetaManagedAgentsAgent`."""

    type: Literal["agent"] = "agent"
    id: str
    version: int
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


class SessionAgent(BaseModel):
    """`BetaManagedAgentsSessionAgent`: the agent version a session runs, as the session shows
    it (the configuration, without the agent's own metadata and times)."""

    type: Literal["agent"] = "agent"
    id: str
    version: int
    name: str
    description: str | None = None
    system: str | None = None
    model: ModelConfig
    tools: list[Tool] = []
    mcp_servers: list[dict[str, Any]] = []
    skills: list[dict[str, Any]] = []
    multiagent: dict[str, Any] | None = None
    execution_identity: ExecutionIdentity = SERVICE_ACCOUNT

    @classmethod
    def of(cls, agent: Agent) -> SessionAgent:
        # Already validated when it was stored: a limit made stricter later must not hide it.
        return cls.model_validate(agent.model_dump(include=set(cls.model_fields)), context=STORED)


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
        if isinstance(tool, AgentToolset):
            if "auto" in tool.policies() or tool.default_config.permission_policy.type == "auto":
                raise NotSupportedError(
                    "the auto permission policy is not supported yet: use always_allow or "
                    "always_ask"
                )
            for tool_config in tool.configs:
                if options := tool_config.unsupported_options():
                    raise NotSupportedError(
                        f"{tool_config.name} options {options} are not supported yet"
                    )
    if config.model.inference_geo is not None:
        raise NotSupportedError("model.inference_geo is not supported yet")
    if not isinstance(config.execution_identity, ServiceAccountIdentity):
        raise NotSupportedError(
            "execution_identity aws_role is not supported yet: runs use the worker's own "
            'identity, {"type": "service_account"}'
        )
    if config.mcp_servers:
        raise NotSupportedError("mcp_servers are not supported yet")
    if config.skills:
        raise NotSupportedError("skills are not supported yet")
    if config.multiagent:
        from reverie.models.errors import InvalidRequestError
        from reverie.models.threads import DELEGATION_TOOLS, parse_multiagent

        try:
            parse_multiagent(config.multiagent)
        except NotImplementedError as error:
            raise NotSupportedError(str(error)) from None
        except ValueError as error:
            raise InvalidRequestError(f"multiagent: {error}") from None
        clashing = {t.name for t in config.tools if isinstance(t, CustomTool)} & set(
            DELEGATION_TOOLS
        )
        if clashing:
            raise InvalidRequestError(
                f"a coordinator's custom tools may not take the delegation tools' names: "
                f"{sorted(clashing)}"
            )
