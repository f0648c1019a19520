"""Where Temporal and Postgres are: the environment first, then what `reverie up` wrote down.

The same code serves the embedded stack and a cluster: TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE
(with TEMPORAL_API_KEY and TEMPORAL_TLS_* for Temporal Cloud or a TLS cluster), or a Temporal
envconfig profile (TEMPORAL_PROFILE, from TEMPORAL_CONFIG_FILE or the default config file),
each variable set overriding the profile. Every client gets Reverie's data converter (sealed
when REVERIE_PAYLOAD_KEYS is set), the tracing interceptor when tracing is on, and the
process's metrics runtime when REVERIE_METRICS_PORT is set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.service import TLSConfig

from reverie.observability.metrics import metrics_runtime
from reverie.observability.queue_depth import start_reporting
from reverie.observability.tracing import configure_tracing, temporal_interceptors
from reverie.payload_codec import data_converter
from reverie.settings import Settings
from reverie.store.pool import Pool, connect

DEFAULT_TEMPORAL_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"
log = logging.getLogger("reverie.connections")


def running_stack(settings: Settings) -> dict[str, Any]:
    """Addresses of the embedded stack, if `reverie up` is running under this REVERIE_HOME."""
    try:
        return json.loads(settings.stack_file.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _profile(settings: Settings) -> dict[str, Any]:
    """The envconfig profile's connect options, when TEMPORAL_PROFILE names one."""
    if not settings.temporal_profile:
        return {}
    from temporalio.envconfig import ClientConfigProfile

    # The profile alone: Reverie's settings (read from the same variables) apply on top.
    source = settings.temporal_config_file
    profile = ClientConfigProfile.load(
        profile=settings.temporal_profile,
        config_source=source.expanduser() if source else None,
        disable_env=True,
    )
    return dict(profile.to_client_connect_config())


def _read(path: Path | None, variable: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.expanduser().read_bytes()
    except OSError as error:
        raise RuntimeError(f"{variable}: cannot read {path}: {error.strerror}") from None


def _tls(settings: Settings, profile_tls: Any) -> bool | TLSConfig | None:
    files = (
        settings.temporal_tls_server_ca_cert_path,
        settings.temporal_tls_client_cert_path,
        settings.temporal_tls_client_key_path,
    )
    if settings.temporal_tls is False:
        return False
    if any(files) or settings.temporal_tls_server_name:
        return TLSConfig(
            server_root_ca_cert=_read(files[0], "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
            client_cert=_read(files[1], "TEMPORAL_TLS_CLIENT_CERT_PATH"),
            client_private_key=_read(files[2], "TEMPORAL_TLS_CLIENT_KEY_PATH"),
            domain=settings.temporal_tls_server_name,
        )
    if settings.temporal_tls:
        return profile_tls if isinstance(profile_tls, TLSConfig) else True
    # Unset: the profile's choice; with neither, the SDK's (TLS on when an API key is sent).
    return profile_tls


def temporal_connect_options(settings: Settings) -> dict[str, Any]:
    """Target, namespace, API key and TLS: each setting over the profile over the defaults."""
    profile = _profile(settings)
    address = (
        settings.temporal_address
        or profile.get("target_host")
        or running_stack(settings).get("temporal_address")
        or DEFAULT_TEMPORAL_ADDRESS
    )
    options: dict[str, Any] = {
        "target_host": address,
        "namespace": settings.temporal_namespace or profile.get("namespace") or DEFAULT_NAMESPACE,
        "api_key": settings.temporal_api_key or profile.get("api_key"),
        "tls": _tls(settings, profile.get("tls")),
    }
    if profile.get("rpc_metadata"):
        options["rpc_metadata"] = profile["rpc_metadata"]
    if options["api_key"] and options["tls"] is False:
        # Allowed, as the SDK allows it (a sidecar or mesh may encrypt), but never silently:
        # the key then crosses the network in the clear unless something else encrypts it.
        log.warning(
            "TEMPORAL_API_KEY is sent to %s without TLS (TLS turned off): only safe when a "
            "sidecar or service mesh encrypts the connection",
            address,
        )
    return options


async def connect_temporal(
    settings: Settings, *, interceptors: Sequence[Any] | None = None
) -> Client:
    """A client with Reverie's converter; `interceptors` replaces the configured ones."""
    runtime = metrics_runtime(settings)
    configure_tracing(settings)
    client = await Client.connect(
        **temporal_connect_options(settings),
        data_converter=data_converter(settings.payload_keys),
        interceptors=list(temporal_interceptors() if interceptors is None else interceptors),
        **({"runtime": runtime} if runtime is not None else {}),
    )
    if runtime is not None:
        start_reporting(client, settings.task_queue)
    return client


def database_url(settings: Settings) -> str:
    url = settings.database_url or running_stack(settings).get("database_url")
    if not url:
        raise RuntimeError(
            "no database: set DATABASE_URL, or start the embedded stack with `reverie up`"
        )
    return url


async def connect_database(settings: Settings, *, max_size: int | None = None) -> Pool:
    """The process's pool: REVERIE_DATABASE_POOL_SIZE connections at most, unless told."""
    size = settings.database_pool_size if max_size is None else max_size
    return await connect(database_url(settings), min_size=1, max_size=size)
