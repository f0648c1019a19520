"""Where Temporal and Postgres are: the environment first, then what `reverie up` wrote down."""

from __future__ import annotations

import json
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from reverie.settings import Settings
from reverie.store.pool import Pool, connect

DEFAULT_TEMPORAL_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"


def running_stack(settings: Settings) -> dict[str, Any]:
    """Addresses of the embedded stack, if `reverie up` is running under this REVERIE_HOME."""
    try:
        return json.loads(settings.stack_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}


async def connect_temporal(settings: Settings) -> Client:
    stack = running_stack(settings)
    if settings.temporal_address or not settings.temporal_profile:
        address = settings.temporal_address or stack.get(
            "temporal_address", DEFAULT_TEMPORAL_ADDRESS
        )
        namespace = settings.temporal_namespace or DEFAULT_NAMESPACE
        return await Client.connect(
            address, namespace=namespace, data_converter=pydantic_data_converter
        )
    from temporalio.envconfig import ClientConfigProfile

    profile = ClientConfigProfile.load(profile=settings.temporal_profile)
    config = profile.to_client_connect_config()
    if settings.temporal_namespace:
        config["namespace"] = settings.temporal_namespace
    return await Client.connect(**config, data_converter=pydantic_data_converter)


def database_url(settings: Settings) -> str:
    url = settings.database_url or running_stack(settings).get("database_url")
    if not url:
        raise RuntimeError(
            "no database: set DATABASE_URL, or start the embedded stack with `reverie up`"
        )
    return url


async def connect_database(settings: Settings, *, max_size: int = 10) -> Pool:
    return await connect(database_url(settings), max_size=max_size)
