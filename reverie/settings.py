"""One settings object for every process Reverie runs (CLI, worker, stack, tests)."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reverie.event_loop import EventLoopChoice


class Settings(BaseSettings):
    """Read from the environment; unset values fall back to the embedded stack's defaults."""

    # hide_input_in_errors: a refused value may be a secret (a payload key, a database URL
    # with its password); the error names the variable and the reason only.
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    temporal_address: str | None = Field(default=None, alias="TEMPORAL_ADDRESS")
    temporal_namespace: str | None = Field(default=None, alias="TEMPORAL_NAMESPACE")
    # A Temporal envconfig profile (TOML); used when TEMPORAL_ADDRESS is not set.
    temporal_profile: str | None = Field(default=None, alias="TEMPORAL_PROFILE")
    # (issue 21) The envconfig TOML file the profile is read from; unset: Temporal's default
    # (~/.config/temporalio/temporal.toml).
    temporal_config_file: Path | None = Field(default=None, alias="TEMPORAL_CONFIG_FILE")
    # (issue 21) Temporal Cloud or a TLS cluster: the same variables as Temporal's envconfig.
    # TLS is on when any of these is set (or TEMPORAL_TLS=true); TEMPORAL_TLS=false forces it off.
    temporal_api_key: str | None = Field(default=None, alias="TEMPORAL_API_KEY", repr=False)
    temporal_tls: bool | None = Field(default=None, alias="TEMPORAL_TLS")
    temporal_tls_server_ca_cert_path: Path | None = Field(
        default=None, alias="TEMPORAL_TLS_SERVER_CA_CERT_PATH"
    )
    temporal_tls_client_cert_path: Path | None = Field(
        default=None, alias="TEMPORAL_TLS_CLIENT_CERT_PATH"
    )
    temporal_tls_client_key_path: Path | None = Field(
        default=None, alias="TEMPORAL_TLS_CLIENT_KEY_PATH"
    )
    temporal_tls_server_name: str | None = Field(default=None, alias="TEMPORAL_TLS_SERVER_NAME")
    # repr=False: a URL's password and the model key never show in a repr (logs, tracebacks).
    database_url: str | None = Field(default=None, alias="DATABASE_URL", repr=False)
    # (issue 21) Connections each process's pool holds at most (plus one LISTEN connection for
    # event streams or webhooks): size PostgreSQL's max_connections for all processes.
    database_pool_size: int = Field(default=10, alias="REVERIE_DATABASE_POOL_SIZE", ge=1)
    # (issue 21) Observability. Prometheus metrics (the Temporal SDK's and Reverie's own) on
    # this port of REVERIE_METRICS_HOST; 0: none.
    metrics_port: int = Field(default=0, alias="REVERIE_METRICS_PORT", ge=0, le=65535)
    metrics_host: str = Field(default="127.0.0.1", alias="REVERIE_METRICS_HOST")
    # OpenTelemetry traces: exported by OTLP/HTTP when this is set (the SDK's own variable;
    # OTEL_SERVICE_NAME and the other OTEL_* variables apply too).
    otlp_endpoint: str | None = Field(default=None, alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    # `text` (a line for people) or `json` (one object a line, with session and thread ids).
    log_format: Literal["text", "json"] = Field(default="text", alias="REVERIE_LOG_FORMAT")
    # (issue 21) Payload encryption: `id:base64-key` (16, 24 or 32 bytes), comma-separated.
    # The first encrypts; all decrypt, so keys rotate by putting a new one first. Unset: off.
    payload_keys: str | None = Field(default=None, alias="REVERIE_PAYLOAD_KEYS", repr=False)
    # Origins (e.g. the Temporal Web UI's) allowed to call /codec/decode from a browser.
    codec_cors_origins: str = Field(default="", alias="REVERIE_CODEC_CORS_ORIGINS")
    anthropic_api_key: str | None = Field(default=None, alias="ANTHROPIC_API_KEY", repr=False)
    anthropic_base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    reverie_home: Path = Field(default=Path("~/.reverie"), alias="REVERIE_HOME")
    task_queue: str = Field(default="reverie", alias="REVERIE_TASK_QUEUE")
    # Where `reverie api` (and `reverie up`) serve the HTTP API; loopback unless told otherwise.
    api_host: str = Field(default="127.0.0.1", alias="REVERIE_API_HOST")
    api_port: int = Field(default=8080, alias="REVERIE_API_PORT", ge=0, le=65535)
    # Open event streams one API process serves (each costs ~12 kB and a share of one reader).
    api_max_streams: int = Field(default=10_000, alias="REVERIE_API_MAX_STREAMS", ge=1)
    # Attempts of one model call before the session idles with `retries_exhausted`.
    model_max_attempts: int = Field(default=6, alias="REVERIE_MODEL_MAX_ATTEMPTS", ge=1)
    # Upper bound on one backoff, whatever `retry-after` asks for: a session should not sleep
    # for an hour because a proxy said so.
    model_max_backoff_seconds: float = Field(
        default=60.0, alias="REVERIE_MODEL_MAX_BACKOFF_SECONDS", gt=0
    )
    # Per-request HTTP timeout of one model call; a timeout counts as a retryable failure.
    model_timeout_seconds: float = Field(default=600.0, alias="REVERIE_MODEL_TIMEOUT_SECONDS", gt=0)
    max_tokens: int = Field(default=8192, alias="REVERIE_MAX_TOKENS", ge=1)
    # Where session workspaces live. Tool workers on several hosts must share it (see README).
    workspace_root: Path | None = Field(default=None, alias="REVERIE_WORKSPACE_ROOT")
    # `none` lets bash run unsandboxed where bubblewrap is missing; anything else refuses then.
    sandbox: str | None = Field(default=None, alias="REVERIE_SANDBOX")
    # Networks (CIDR, comma-separated) that sessions may reach although they are not public,
    # e.g. a company proxy on 10.1.2.3/32. Empty: only public addresses, ever.
    egress_allow_networks: str = Field(default="", alias="REVERIE_EGRESS_ALLOW_NETWORKS")
    # A SearXNG-compatible search endpoint for the `web_search` tool: `GET <url>?q=<query>
    # &format=json` answering `{"results": [{"url", "title", "content"}]}`. Trusted operator
    # configuration: the tool reaches this host and port (even on a private network) and
    # nothing else. Unset: `web_search` answers the model that no search provider is set up.
    web_search_url: str | None = Field(default=None, alias="REVERIE_WEB_SEARCH_URL")
    # (issue 13) How long a session's next workflow task waits for the worker that holds it in
    # its cache before any worker may take it: the pause a session sees when that worker died.
    worker_sticky_timeout_seconds: float = Field(
        default=5.0, alias="REVERIE_WORKER_STICKY_TIMEOUT_SECONDS", gt=0
    )
    # (issue 13) Prompt size, in tokens, at which a session's transcript is compacted: the
    # trigger sent to the API's own compaction, or where Reverie summarises the older part
    # itself. Never above 80% of a context window the Models API reports.
    compaction_threshold_tokens: int = Field(
        default=150_000, alias="REVERIE_COMPACTION_THRESHOLD_TOKENS", ge=1
    )
    # Per-model thresholds, `model=tokens` comma-separated; they override the one above.
    compaction_model_thresholds: str = Field(
        default="", alias="REVERIE_COMPACTION_MODEL_THRESHOLDS"
    )
    # Use the Messages API's own compaction (`compact_20260112`) for models that report it.
    api_compaction: bool = Field(default=True, alias="REVERIE_API_COMPACTION")
    # (issue 15) Transcripts a worker keeps in memory between model steps, so that a step reads
    # only the rows that are new (checked against the database first); 0 turns it off.
    transcript_cache_megabytes: int = Field(default=256, alias="REVERIE_TRANSCRIPT_CACHE_MB", ge=0)
    # (issue 15) Worker tuning: concurrent polls for workflow tasks and for activity tasks (a
    # burst of new sessions waits on the workflow polls), workflow tasks run at once, threads
    # running workflow code (few: they share one interpreter lock), and how the workflow sandbox
    # loads modules (`passthrough`: once per worker, the sandbox's checks of workflow code still
    # apply; `reload`: afresh for every workflow run, the SDK's default, much more CPU).
    worker_workflow_polls: int = Field(default=20, alias="REVERIE_WORKER_WORKFLOW_POLLS", ge=2)
    worker_activity_polls: int = Field(default=10, alias="REVERIE_WORKER_ACTIVITY_POLLS", ge=1)
    worker_workflow_tasks: int = Field(default=200, alias="REVERIE_WORKER_WORKFLOW_TASKS", ge=2)
    worker_activities: int = Field(default=200, alias="REVERIE_WORKER_ACTIVITIES", ge=1)
    worker_workflow_threads: int = Field(default=2, alias="REVERIE_WORKER_WORKFLOW_THREADS", ge=1)
    # The worker process's young-generation garbage-collection threshold (Python's default is
    # 700): a worker allocates many short-lived objects per task, and a larger young generation
    # trades a few MB for ~5-10% more sessions/s (bench/README.md). 0 keeps Python's default.
    worker_gc_threshold: int = Field(default=100_000, alias="REVERIE_WORKER_GC_THRESHOLD", ge=0)
    workflow_sandbox: Literal["passthrough", "reload"] = Field(
        default="passthrough", alias="REVERIE_WORKFLOW_SANDBOX"
    )
    # (issue 15) The event loop of every Reverie process (reverie/event_loop.py reads it from the
    # environment before the loop starts; declared here for validation and the README's table).
    event_loop: EventLoopChoice = Field(default="uvloop", alias="REVERIE_EVENT_LOOP")
    # (issue 15) The model client's HTTP transport (activities/model.py `model_client`).
    model_http: Literal["aiohttp", "httpx"] = Field(default="aiohttp", alias="REVERIE_MODEL_HTTP")
    # (issue 17) The most memories one memory store may hold (the hosted API's limit).
    memory_max_memories: int = Field(default=10_000, alias="REVERIE_MEMORY_MAX_MEMORIES", ge=1)
    # (issue 19) Webhooks. Non-public networks (CIDR, comma-separated) webhook endpoints may be
    # on, e.g. 10.1.2.3/32 for a receiver inside the company network; empty: public addresses
    # only. Apart from REVERIE_EGRESS_ALLOW_NETWORKS: opting a receiver in lets no session in.
    webhook_allow_networks: str = Field(default="", alias="REVERIE_WEBHOOK_ALLOW_NETWORKS")
    # How long a delivery is retried (from its event, or from a redelivery) before it fails.
    webhook_retry_seconds: float = Field(
        default=3 * 24 * 3600.0, alias="REVERIE_WEBHOOK_RETRY_SECONDS", gt=0
    )
    # The first retry's delay; each later one doubles, up to the maximum (with +-20% jitter).
    webhook_backoff_seconds: float = Field(
        default=5.0, alias="REVERIE_WEBHOOK_BACKOFF_SECONDS", gt=0
    )
    webhook_max_backoff_seconds: float = Field(
        default=4 * 3600.0, alias="REVERIE_WEBHOOK_MAX_BACKOFF_SECONDS", gt=0
    )
    # One attempt: connecting, sending, and the receiver's answer (its first 64 KiB read).
    webhook_timeout_seconds: float = Field(
        default=15.0, alias="REVERIE_WEBHOOK_TIMEOUT_SECONDS", gt=0
    )
    # Consecutive failed deliveries (each retried until its retries ran out) that disable an
    # endpoint.
    webhook_disable_after: int = Field(default=20, alias="REVERIE_WEBHOOK_DISABLE_AFTER", ge=1)
    # After a secret is regenerated, deliveries are signed with the old one too for this long.
    webhook_rotation_grace_seconds: float = Field(
        default=24 * 3600.0, alias="REVERIE_WEBHOOK_ROTATION_GRACE_SECONDS", ge=0
    )
    # Attempts in flight to one endpoint at once.
    webhook_max_in_flight: int = Field(default=32, alias="REVERIE_WEBHOOK_MAX_IN_FLIGHT", ge=1)

    @field_validator("payload_keys")
    @classmethod
    def _payload_keys(cls, value: str | None) -> str | None:
        """Refused at start (never echoing a key), not at the first payload."""
        if value is None or not value.strip():
            return None
        from reverie.payload_codec import parse_keys

        parse_keys(value)
        return value

    @field_validator("compaction_model_thresholds")
    @classmethod
    def _model_thresholds(cls, value: str) -> str:
        for entry in (e.strip() for e in value.split(",")):
            if not entry:
                continue
            model, _, tokens = entry.rpartition("=")
            if not model.strip() or not tokens.strip().isdigit() or int(tokens) < 1:
                raise ValueError(
                    f"REVERIE_COMPACTION_MODEL_THRESHOLDS: {entry!r} is not `model=tokens` "
                    "with a positive whole number of tokens"
                )
        return value

    def compaction_threshold_for(self, model: str) -> int | None:
        """The threshold set for this model by name, if any."""
        for entry in (e.strip() for e in self.compaction_model_thresholds.split(",")):
            name, _, tokens = entry.rpartition("=")
            if entry and name.strip() == model:
                return int(tokens)
        return None

    @cached_property
    def home(self) -> Path:
        return self.reverie_home.expanduser().resolve()

    @property
    def workspaces(self) -> Path:
        return (self.workspace_root or self.home / "workspaces").expanduser().resolve()

    @field_validator("egress_allow_networks", "webhook_allow_networks")
    @classmethod
    def _networks(cls, value: str, info: ValidationInfo) -> str:
        variable = cls.model_fields[info.field_name or ""].alias
        for entry in (n.strip() for n in value.split(",")):
            if entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as error:
                    raise ValueError(
                        f"{variable}: {entry!r} is not a network in CIDR form"
                    ) from error
        return value

    @property
    def webhook_networks(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.webhook_allow_networks.split(",") if n.strip())

    @field_validator("web_search_url")
    @classmethod
    def _search_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        url = urlsplit(value.strip())
        if url.scheme not in ("http", "https") or not url.hostname or url.fragment:
            raise ValueError(
                f"REVERIE_WEB_SEARCH_URL: {value!r} is not an http:// or https:// URL with a "
                "host (and no #fragment)"
            )
        return value.strip()

    @property
    def egress_networks(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.egress_allow_networks.split(",") if n.strip())

    @property
    def temporal_data_file(self) -> Path:
        return self.home / "temporal.sqlite"

    @property
    def postgres_dir(self) -> Path:
        return self.home / "postgres"

    @property
    def stack_file(self) -> Path:
        """Where `reverie up` writes the addresses of what it started, for other commands."""
        return self.home / "stack.json"


def load_settings() -> Settings:
    return Settings()
