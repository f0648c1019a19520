"""Environments: where a session's tools run, and what network they may reach.

The shapes are the SDK's: an answer is `BetaEnvironment` (`config: {type: "cloud", networking,
packages}`), a request `environment_create_params` / `environment_update_params`. Reverie runs
every environment itself, so only `cloud` configurations exist (`self_hosted` is refused).

- `networking: {type: "unrestricted"}` reaches any public address; `{type: "limited",
  allowed_hosts, allow_mcp_servers, allow_package_managers}` only the hosts listed (by
  `web_fetch` and by bash through the sandbox's proxy); no hosts at all is no network.
- `allow_package_managers: true` adds the public package registries (`PACKAGE_MANAGER_HOSTS`)
  to what limited networking reaches, so `pip install --user`, `npm install`, `cargo fetch`
  and `go mod download` work from bash.
- `allow_mcp_servers` is kept and shown; it opens nothing until Reverie speaks MCP.
- `packages` must be empty: Reverie installs no packages into environments yet.
- `scope` is always `organization`: a Reverie deployment has no per-account visibility, and
  `account` is refused (as the hosted API refuses it for API organizations).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from reverie.models.common import Metadata, StrictModel

DEFAULT_ENVIRONMENT_ID = "env_default"
_HOST = re.compile(
    r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d+)?$"
)
MAX_ALLOWED_HOSTS = 256
MAX_NAME = 256
MAX_DESCRIPTION = 2048
PACKAGE_MANAGERS = ("apt", "cargo", "gem", "go", "npm", "pip")
# The public registries `allow_package_managers` opens under limited networking, by manager.
PACKAGE_MANAGER_HOSTS: dict[str, tuple[str, ...]] = {
    "apt": ("deb.debian.org", "security.debian.org", "archive.ubuntu.com", "security.ubuntu.com"),
    "cargo": ("crates.io", "index.crates.io", "static.crates.io"),
    "gem": ("rubygems.org", "index.rubygems.org"),
    "go": ("proxy.golang.org", "sum.golang.org"),
    "npm": ("registry.npmjs.org", "registry.yarnpkg.com"),
    "pip": ("pypi.org", "files.pythonhosted.org"),
}


def _no_null(default: Any) -> Any:
    """A request may send null for a field it leaves at its default."""

    def check(value: Any) -> Any:
        return default() if value is None else value

    return check


def _hosts(hosts: list[str]) -> list[str]:
    cleaned = [host.strip().lower() for host in hosts]
    bad = [host for host in cleaned if not _HOST.match(host)]
    if bad:
        raise ValueError(f"not host names: {bad}")
    return cleaned


class UnrestrictedNetworking(StrictModel):
    type: Literal["unrestricted"] = "unrestricted"


class LimitedNetworking(StrictModel):
    """Only these hosts may be reached (`example.com`, `*.example.com`, either with `:port`);
    an empty list (and no package managers) reaches no network."""

    type: Literal["limited"] = "limited"
    allowed_hosts: list[str] = Field(default_factory=list, max_length=MAX_ALLOWED_HOSTS)
    allow_mcp_servers: bool = False
    allow_package_managers: bool = False

    _null_hosts = field_validator("allowed_hosts", mode="before")(_no_null(list))
    _null_flags = field_validator("allow_mcp_servers", "allow_package_managers", mode="before")(
        _no_null(lambda: False)
    )
    _check_hosts = field_validator("allowed_hosts")(_hosts)


Networking = Annotated[UnrestrictedNetworking | LimitedNetworking, Field(discriminator="type")]


class Packages(StrictModel):
    """Packages to install, by manager. Reverie installs none yet: each list must be empty."""

    type: Literal["packages"] = "packages"
    apt: list[str] = []
    cargo: list[str] = []
    gem: list[str] = []
    go: list[str] = []
    npm: list[str] = []
    pip: list[str] = []

    _null_lists = field_validator(*PACKAGE_MANAGERS, mode="before")(_no_null(list))

    def requested(self) -> dict[str, list[str]]:
        return {name: getattr(self, name) for name in PACKAGE_MANAGERS if getattr(self, name)}


class CloudConfig(StrictModel):
    """`BetaCloudConfig`: the network policy and packages of an environment Reverie runs."""

    type: Literal["cloud"] = "cloud"
    networking: Networking = LimitedNetworking()
    packages: Packages = Packages()

    _null_networking = field_validator("networking", mode="before")(_no_null(LimitedNetworking))
    _null_packages = field_validator("packages", mode="before")(_no_null(Packages))

    def egress_hosts(self) -> list[str]:
        """The hosts limited networking reaches: `allowed_hosts`, plus the package registries
        when `allow_package_managers` is set."""
        networking = self.networking
        if not isinstance(networking, LimitedNetworking):
            return []
        hosts = list(networking.allowed_hosts)
        if networking.allow_package_managers:
            hosts += [h for group in PACKAGE_MANAGER_HOSTS.values() for h in group]
        return hosts


class SelfHostedConfig(StrictModel):
    """Accepted in shape only: refused by `check_supported`."""

    type: Literal["self_hosted"] = "self_hosted"


ConfigParams = Annotated[CloudConfig | SelfHostedConfig, Field(discriminator="type")]
Scope = Literal["organization", "account"]


def _organization_only(value: Scope | None) -> Scope | None:
    if value == "account":
        raise ValueError(
            "scope 'account' is not available: Reverie environments are visible to the whole "
            "organization (scope 'organization')"
        )
    return value


def _old_networking(data: Any) -> Any:
    if isinstance(data, dict) and "networking" in data:
        raise ValueError(
            'networking goes inside config: {"config": {"type": "cloud", "networking": ...}}'
        )
    return data


class EnvironmentCreate(StrictModel):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    config: ConfigParams | None = None
    metadata: Metadata = Field(default_factory=dict)
    scope: Scope | None = None

    _scope = field_validator("scope")(_organization_only)
    _moved = model_validator(mode="before")(_old_networking)

    def cloud_config(self) -> CloudConfig:
        return self.config if isinstance(self.config, CloudConfig) else CloudConfig()


class EnvironmentUpdate(StrictModel):
    """A partial update. Omitted fields stay; in `config`, omitted `networking` and `packages`
    stay, and so do the omitted fields of a `limited` networking that stays limited. Metadata is
    patched key by key (null or an empty string deletes a key)."""

    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    config: ConfigParams | None = None
    metadata: dict[str, str | None] | None = None
    scope: Scope | None = None

    _scope = field_validator("scope")(_organization_only)
    _moved = model_validator(mode="before")(_old_networking)

    def apply_to(self, current: CloudConfig) -> CloudConfig:
        """The configuration this update leaves; validated as a whole like a create."""
        if not isinstance(self.config, CloudConfig):
            return current
        merged = current.model_dump()
        given = self.config.model_dump(include=self.config.model_fields_set)
        if "packages" in given:
            merged["packages"] = given["packages"]
        if "networking" in given:
            networking = self.config.networking
            if isinstance(networking, LimitedNetworking) and isinstance(
                current.networking, LimitedNetworking
            ):
                merged["networking"] = {
                    **current.networking.model_dump(),
                    **networking.model_dump(include=networking.model_fields_set),
                }
            else:
                merged["networking"] = given["networking"]
        return CloudConfig.model_validate(merged)

    def metadata_patch(self) -> dict[str, str | None] | None:
        if self.metadata is None:
            return None
        return {key: value or None for key, value in self.metadata.items()}


class Environment(BaseModel):
    """`BetaEnvironment`."""

    type: Literal["environment"] = "environment"
    id: str
    name: str
    description: str | None = None
    config: CloudConfig = CloudConfig()
    metadata: dict[str, str] = {}
    scope: Literal["organization"] = "organization"
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None

    @property
    def networking(self) -> UnrestrictedNetworking | LimitedNetworking:
        return self.config.networking


class EnvironmentDeleted(BaseModel):
    """`BetaEnvironmentDeleteResponse`."""

    type: Literal["environment_deleted"] = "environment_deleted"
    id: str


def check_supported(config: ConfigParams | None) -> None:
    """Refuse, clearly, the parts of the hosted API that Reverie has not built yet."""
    from reverie.models.errors import NotSupportedError

    if isinstance(config, SelfHostedConfig):
        raise NotSupportedError(
            "self_hosted environments are not supported yet: Reverie runs every environment "
            'itself; use {"type": "cloud"}'
        )
    if isinstance(config, CloudConfig) and (wanted := config.packages.requested()):
        raise NotSupportedError(
            f"packages are not supported yet (Reverie installs none): {wanted}; with limited "
            "networking, allow_package_managers lets bash install them itself"
        )
