"""Environments: where a session's tools run, and what network they may reach."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, field_validator

from reverie.models.common import Metadata, StrictModel

DEFAULT_ENVIRONMENT_ID = "env_default"
_HOST = re.compile(
    r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d+)?$"
)


class UnrestrictedNetworking(StrictModel):
    type: Literal["unrestricted"] = "unrestricted"


class LimitedNetworking(StrictModel):
    """Only these hosts may be reached (`example.com`, `*.example.com`), by `web_fetch` and by
    bash through the sandbox's proxy; an empty list reaches no network."""

    type: Literal["limited"] = "limited"
    allowed_hosts: list[str] = Field(default_factory=list, max_length=256)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        cleaned = [host.strip().lower() for host in hosts]
        bad = [host for host in cleaned if not _HOST.match(host)]
        if bad:
            raise ValueError(f"not host names: {bad}")
        return cleaned


Networking = Annotated[UnrestrictedNetworking | LimitedNetworking, Field(discriminator="type")]


class EnvironmentConfig(StrictModel):
    name: str = Field(min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=2048)
    networking: Networking = LimitedNetworking()
    metadata: Metadata = Field(default_factory=dict)


class EnvironmentCreate(EnvironmentConfig):
    pass


class EnvironmentUpdate(StrictModel):
    name: str | None = Field(default=None, min_length=1, max_length=256)
    description: str | None = None
    networking: Networking | None = None
    metadata: dict[str, str | None] | None = None


class Environment(EnvironmentConfig):
    type: Literal["environment"] = "environment"
    id: str
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None
