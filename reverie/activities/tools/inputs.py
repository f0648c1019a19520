"""The tools' inputs, validated before anything runs.

Field names are the SDK's (`BetaManagedAgentsAgentToolset20260401*Input`) plus `web_fetch`'s and
`web_search`'s;
unknown fields are refused so a misspelt option is an error the model can see and fix.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ToolInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadInput(ToolInput):
    file_path: str
    view_range: list[int] | None = None

    @field_validator("view_range")
    @classmethod
    def _pair(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(value) != 2:
            raise ValueError("view_range must be [start_line, end_line]")
        return value


class WriteInput(ToolInput):
    file_path: str
    content: str


class EditInput(ToolInput):
    file_path: str
    old_string: str = Field(min_length=1)
    new_string: str
    replace_all: bool | None = None


class GlobInput(ToolInput):
    pattern: str = Field(min_length=1)
    path: str | None = None


class GrepInput(ToolInput):
    pattern: str = Field(min_length=1)
    path: str | None = None


class BashInput(ToolInput):
    command: str | None = None
    restart: bool | None = None
    timeout_ms: int | None = Field(default=None, ge=0)


class WebFetchInput(ToolInput):
    url: str = Field(min_length=1)
    max_length: int | None = Field(default=None, ge=1)


class WebSearchInput(ToolInput):
    query: str = Field(min_length=1, max_length=1000)
    max_results: int | None = Field(default=None, ge=1, le=50)


def describe(error: ValidationError) -> str:
    """A short, model-readable account of what is wrong with an input."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "input"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
