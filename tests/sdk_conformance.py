"""A strict check that a JSON answer fits one of the `anthropic` SDK's response types.

`SdkType.model_validate(data)` is too lenient to prove wire compatibility: the SDK's models
accept extra keys, coerce `"1"` to `1`, parse a naive time as if it were UTC, and never check
an id's prefix. This module walks the type annotations instead, field for field, and reports
every problem with its path (`tools[0].configs[2].permission_policy.type`), so that one run
shows all that diverges, not the first thing pydantic trips on.

Rules:
- a model is a JSON object; every required field is present; each value fits its annotation;
  keys the SDK type does not declare are problems unless `allow_extra` names them (by key or
  by `path` pattern) or the SDK model declares `__pydantic_extra__` (e.g. a JSON schema);
- `Literal[...]` values are exactly one of the listed values (no `True` for `1`);
- `str`, `int`, `float`, `bool` are checked without coercion (`bool` is not an `int`);
- `datetime` is an RFC 3339 string with a time zone; `date` is `YYYY-MM-DD`;
- a union annotated with the SDK's `UnionDiscriminator` is resolved by its discriminator
  field; any other union fits if one member fits (the closest member's problems are shown);
- `id` and `*_id` / `*_ids` fields carry their type's prefix (`agent_`, `env_`, `sesn_`,
  `sevt_`...) where Reverie knows it.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union, get_args, get_origin

import pydantic
from anthropic._models import UnionDiscriminator

__all__ = ["SdkMismatch", "assert_fits", "problems"]

# RFC 3339 date-time: full date, "T" (or "t"/space per RFC 3339 5.6 note), time with optional
# fraction, and a mandatory offset.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# The prefix of an object's `id`, by the object's `type` literal. Event types (they contain a
# dot) are all `sevt_`.
ID_PREFIX_BY_TYPE: dict[str, str] = {
    "agent": "agent_",
    "environment": "env_",
    "environment_deleted": "env_",
    "session": "sesn_",
    "session_deleted": "sesn_",
    "session_thread": "sth",
    "memory_store": "memstore_",
    "memory": "mem_",
    "memory_version": "memver_",
    "dream": "drm_",
}

# The prefix of a `<name>_id` / `<name>_ids` field, by field name.
ID_PREFIX_BY_FIELD: dict[str, str] = {
    "agent_id": "agent_",
    "environment_id": "env_",
    "session_id": "sesn_",
    "session_ids": "sesn_",
    "session_thread_id": "sth",
    "parent_thread_id": "sth",
    "from_session_thread_id": "sth",
    "to_session_thread_id": "sth",
    "tool_use_id": "sevt_",
    "mcp_tool_use_id": "sevt_",
    "custom_tool_use_id": "sevt_",
    "model_request_start_id": "sevt_",
    "outcome_evaluation_start_id": "sevt_",
    "event_ids": "sevt_",
    "outcome_id": "outc_",
    "memory_store_id": "memstore_",
    "memory_id": "mem_",
    "memory_version_id": "memver_",
    "dream_id": "drm_",
}


# Fields Reverie adds to an SDK object on purpose (it "adds, never renames"), by the SDK model
# they extend: accepted by default wherever that model appears; `reverie_additions=False`
# refuses them too.
REVERIE_ADDITIONS: dict[str, frozenset[str]] = {
    # Counters beside the SDK's timings: turns taken, model requests made, events recorded.
    "BetaManagedAgentsSessionStats": frozenset({"turns", "model_requests", "events"}),
    # The grader options an outcome was defined with (model, samples, inspect), when given.
    "BetaManagedAgentsUserDefineOutcomeEvent": frozenset({"grader"}),
}


class SdkMismatch(AssertionError):
    """Raised by `assert_fits` with every problem found, one per line."""

    def __init__(self, sdk_type: object, found: list[str]) -> None:
        self.problems = found
        name = getattr(sdk_type, "__name__", repr(sdk_type))
        lines = "\n".join(f"  - {p}" for p in found)
        super().__init__(f"does not fit {name} ({len(found)} problem(s)):\n{lines}")


def assert_fits(
    data: Any,
    sdk_type: Any,
    *,
    allow_extra: bool | Iterable[str] = False,
    reverie_additions: bool = True,
) -> None:
    """Raise `SdkMismatch` listing every way `data` (parsed JSON) differs from `sdk_type`.

    `sdk_type` is an SDK model class or any annotation built of them (`list[Model]`, a union
    alias such as `BetaManagedAgentsSessionEvent`). `allow_extra` is True to accept any
    undeclared key, or the names (`"stats"`) or paths (`"tools[0].x"`, `"*.x"`) of the
    undeclared keys Reverie adds on purpose. `REVERIE_ADDITIONS` are accepted unless
    `reverie_additions` is False.
    """
    found = problems(data, sdk_type, allow_extra=allow_extra, reverie_additions=reverie_additions)
    if found:
        raise SdkMismatch(sdk_type, found)


def problems(
    data: Any,
    sdk_type: Any,
    *,
    allow_extra: bool | Iterable[str] = False,
    reverie_additions: bool = True,
) -> list[str]:
    """The list `assert_fits` would raise with (empty when `data` fits)."""
    extra: bool | frozenset[str] = (
        allow_extra if isinstance(allow_extra, bool) else frozenset(allow_extra)
    )
    additions = REVERIE_ADDITIONS if reverie_additions else {}
    return _Checker(extra, additions).check(data, sdk_type, "$")


class _Checker:
    def __init__(
        self, allow_extra: bool | frozenset[str], additions: dict[str, frozenset[str]]
    ) -> None:
        self.allow_extra = allow_extra
        self.additions = additions

    # -- dispatch -------------------------------------------------------------------------
    def check(self, value: Any, ann: Any, path: str, field: str | None = None) -> list[str]:
        discriminator: str | None = None
        while get_origin(ann) is typing.Annotated:
            for meta in ann.__metadata__:
                if isinstance(meta, UnionDiscriminator):
                    discriminator = meta.field_name
            ann = get_args(ann)[0]
        if isinstance(ann, typing.TypeAliasType if hasattr(typing, "TypeAliasType") else ()):
            return self.check(value, ann.__value__, path, field)  # pragma: no cover
        if isinstance(ann, typing.ForwardRef):
            raise TypeError(f"unresolved forward reference {ann!r} at {path}")

        if ann is Any or ann is object:
            return self._json(value, path)
        if ann is type(None) or ann is None:
            return [] if value is None else [f"{path}: expected null, got {_show(value)}"]

        origin = get_origin(ann)
        if origin is Literal:
            return self._literal(value, get_args(ann), path)
        if origin in (Union, types.UnionType):
            return self._union(value, get_args(ann), path, discriminator, field)
        if origin in (list, typing.List, tuple, set, frozenset, typing.Sequence):  # noqa: UP006
            return self._list(value, ann, path, field)
        if origin in (dict, typing.Dict, typing.Mapping):  # noqa: UP006
            return self._dict(value, ann, path)
        if isinstance(ann, type) and issubclass(ann, pydantic.BaseModel):
            return self._model(value, ann, path)
        if ann is bool:
            return [] if isinstance(value, bool) else [f"{path}: expected bool, got {_show(value)}"]
        if ann is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return []
            return [f"{path}: expected integer, got {_show(value)}"]
        if ann is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return []
            return [f"{path}: expected number, got {_show(value)}"]
        if ann is str:
            return self._str(value, path, field)
        if ann is dt.datetime:
            if isinstance(value, str) and _RFC3339.match(value):
                return []
            return [f"{path}: expected an RFC 3339 time with a time zone, got {_show(value)}"]
        if ann is dt.date:
            if isinstance(value, str) and _DATE.match(value):
                return []
            return [f"{path}: expected a date YYYY-MM-DD, got {_show(value)}"]
        raise TypeError(f"sdk_conformance cannot check annotation {ann!r} at {path}")

    # -- leaves ---------------------------------------------------------------------------
    def _json(self, value: Any, path: str) -> list[str]:
        if value is None or isinstance(value, str | int | float | bool):
            return []
        if isinstance(value, list):
            return [p for i, v in enumerate(value) for p in self._json(v, f"{path}[{i}]")]
        if isinstance(value, dict):
            out = [f"{path}: non-string key {k!r}" for k in value if not isinstance(k, str)]
            return out + [p for k, v in value.items() for p in self._json(v, _join(path, k))]
        return [f"{path}: not JSON: {_show(value)}"]

    def _literal(self, value: Any, allowed: tuple[Any, ...], path: str) -> list[str]:
        for option in allowed:
            if type(value) is type(option) and value == option:
                return []
        return [f"{path}: {_show(value)} is not one of {list(allowed)!r}"]

    def _str(self, value: Any, path: str, field: str | None) -> list[str]:
        if not isinstance(value, str):
            return [f"{path}: expected string, got {_show(value)}"]
        prefix = ID_PREFIX_BY_FIELD.get(field or "")
        if prefix and not value.startswith(prefix):
            return [f"{path}: id {value!r} lacks the prefix {prefix!r}"]
        return []

    # -- containers -----------------------------------------------------------------------
    def _list(self, value: Any, ann: Any, path: str, field: str | None) -> list[str]:
        if not isinstance(value, list):
            return [f"{path}: expected array, got {_show(value)}"]
        args = get_args(ann)
        item = args[0] if args else Any
        if get_origin(ann) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return [f"{path}: expected {len(args)} items, got {len(value)}"]
            return [
                p
                for i, (v, a) in enumerate(zip(value, args, strict=True))
                for p in self.check(v, a, f"{path}[{i}]", field)
            ]
        return [p for i, v in enumerate(value) for p in self.check(v, item, f"{path}[{i}]", field)]

    def _dict(self, value: Any, ann: Any, path: str) -> list[str]:
        if not isinstance(value, dict):
            return [f"{path}: expected object, got {_show(value)}"]
        args = get_args(ann)
        key_ann, val_ann = (args[0], args[1]) if args else (str, Any)
        out: list[str] = []
        for k, v in value.items():
            out += self.check(k, key_ann, f"{path}<key {k!r}>")
            out += self.check(v, val_ann, _join(path, k))
        return out

    def _union(
        self,
        value: Any,
        members: tuple[Any, ...],
        path: str,
        discriminator: str | None,
        field: str | None,
    ) -> list[str]:
        if value is None:
            if type(None) in members:
                return []
            return [f"{path}: expected a value, got null"]
        members = tuple(m for m in members if m is not type(None))
        if discriminator is not None:
            return self._discriminated(value, members, path, discriminator)
        best: list[str] | None = None
        for member in members:
            found = self.check(value, member, path, field)
            if not found:
                return []
            if best is None or len(found) < len(best):
                best = found
        if len(members) == 1:
            return best or []
        names = ", ".join(_name(m) for m in members)
        return [f"{path}: fits none of [{names}]; closest:"] + [f"  {p}" for p in best or []]

    def _discriminated(
        self, value: Any, members: tuple[Any, ...], path: str, key: str
    ) -> list[str]:
        if not isinstance(value, dict):
            return [f"{path}: expected object, got {_show(value)}"]
        tag = value.get(key)
        options: list[Any] = []
        for member in members:
            model = _strip(member)
            if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
                continue
            field = model.model_fields.get(key)
            if field is None:
                continue
            allowed = get_args(_strip(field.annotation))
            options += list(allowed)
            if tag in allowed and type(tag) is str:
                return self.check(value, member, path)
        if tag is None:
            return [f"{path}: missing discriminator {key!r} (one of {options!r})"]
        return [f"{path}.{key}: {_show(tag)} is not one of {options!r}"]

    def _model(self, value: Any, model: type[pydantic.BaseModel], path: str) -> list[str]:
        if not isinstance(value, dict):
            return [f"{path}: expected object ({model.__name__}), got {_show(value)}"]
        out: list[str] = []
        declared: set[str] = set()
        for name, info in model.model_fields.items():
            key = info.alias or name
            declared.add(key)
            sub = _join(path, key)
            if key not in value:
                if info.is_required():
                    out.append(f"{sub}: missing (required by {model.__name__})")
                continue
            ann = info.annotation
            if info.metadata:  # pydantic moves a field's own Annotated[...] extras here
                ann = typing.Annotated[(ann, *info.metadata)]
            if name == "id":
                out += self._object_id(value, sub)
            out += self.check(value[key], ann, sub, field=key)
        open_model = "__pydantic_extra__" in _own_annotations(model)
        for key in value:
            if key in declared or open_model:
                continue
            sub = _join(path, key)
            added = key in self.additions.get(model.__name__, ())
            if not added and not self._extra_allowed(key, sub):
                out.append(f"{sub}: not a field of {model.__name__}")
            else:
                out += self._json(value[key], sub)
        return out

    def _object_id(self, obj: dict[str, Any], path: str) -> list[str]:
        ident, kind = obj.get("id"), obj.get("type")
        if not isinstance(ident, str) or not isinstance(kind, str):
            return []
        prefix = "sevt_" if "." in kind else ID_PREFIX_BY_TYPE.get(kind)
        if prefix and not ident.startswith(prefix):
            return [f"{path}: id {ident!r} of a {kind!r} lacks the prefix {prefix!r}"]
        return []

    def _extra_allowed(self, key: str, path: str) -> bool:
        if self.allow_extra is True:
            return True
        if self.allow_extra is False:
            return False
        bare = re.sub(r"\[\d+\]", "[]", path.removeprefix("$."))
        return any(
            pattern in (key, path, path.removeprefix("$."), bare, f"*.{key}")
            for pattern in self.allow_extra
        )


def _strip(ann: Any) -> Any:
    while get_origin(ann) is typing.Annotated:
        ann = get_args(ann)[0]
    return ann


def _own_annotations(model: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for klass in reversed(model.__mro__):
        if klass.__module__.startswith(("pydantic", "anthropic._models", "builtins")):
            continue
        out.update(inspect.get_annotations(klass))
    return out


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if isinstance(key, str) and key.isidentifier() else f"{path}[{key!r}]"


def _name(ann: Any) -> str:
    ann = _strip(ann)
    return getattr(ann, "__name__", repr(ann))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
