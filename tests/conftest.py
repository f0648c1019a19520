"""One real Temporal dev server, one real PostgreSQL and one fake Messages API per test run."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from reverie import event_loop
from reverie.settings import Settings
from reverie.starter.client import ReverieClient
from reverie.starter.stack import EmbeddedPostgres, TemporalDevServer, free_port
from reverie.store.pool import connect
from reverie.worker import build_worker
from tests.api_support import api, sdk  # noqa: F401  (the HTTP API fixtures)
from tests.fake_model import FakeModelServer


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    """Tests run on the event loop Reverie's processes run on (uvloop unless
    REVERIE_EVENT_LOOP=asyncio), so what they check is what a deployment runs."""
    factory = event_loop.loop_factory()
    return {event_loop.chosen(): factory} if factory else {"asyncio": asyncio.new_event_loop}


# Low enough that a dozen turns cross it, so continue-as-new is exercised for real.
CONTINUE_AS_NEW_EVENTS = 200


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reverie")


@pytest.fixture(scope="session")
def temporal_server(tmp_root: Path) -> Iterator[TemporalDevServer]:
    server = TemporalDevServer(
        db_file=None,
        port=free_port(),
        choose_ports=True,
        ui_port=None,
        extra_dynamic_config=(f"limit.historyCount.suggestContinueAsNew={CONTINUE_AS_NEW_EVENTS}",),
        log_file=tmp_root / "temporal.log",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def database_url(tmp_root: Path) -> AsyncIterator[str]:
    """A fresh database per run: in `DATABASE_URL`'s server if set, else an embedded one."""
    embedded = None
    base = os.environ.get("DATABASE_URL")
    if not base:
        # Not under pytest's folders: each pytest run starting makes /tmp/pytest-of-<user> 0700
        # again, which (when root) would lock PostgreSQL's own account out of a concurrent run's.
        pg_home = Path(tempfile.mkdtemp(prefix="reverie-test-pg-"))
        embedded = EmbeddedPostgres(pg_home / "pg")
        base = embedded.start()
    name = f"reverie_test_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield _with_database(base, name)
    if embedded:
        embedded.stop()
        shutil.rmtree(pg_home, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    head = head.rsplit("/", 1)[0] + "/" + name
    return f"{head}?{query}" if query else head


@pytest.fixture(scope="session")
async def fake_model() -> AsyncIterator[FakeModelServer]:
    server = FakeModelServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def settings(
    temporal_server: TemporalDevServer,
    database_url: str,
    fake_model: FakeModelServer,
    tmp_root: Path,
) -> Settings:
    return Settings(
        TEMPORAL_ADDRESS=temporal_server.address,
        TEMPORAL_NAMESPACE="default",
        DATABASE_URL=database_url,
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=fake_model.base_url,
        REVERIE_HOME=tmp_root / "home",
        REVERIE_TASK_QUEUE=f"reverie-test-{uuid.uuid4().hex[:6]}",
        REVERIE_MODEL_MAX_ATTEMPTS=4,
        REVERIE_MODEL_MAX_BACKOFF_SECONDS=2,
        REVERIE_MODEL_TIMEOUT_SECONDS=30,
        # bubblewrap where it works (CI installs it); on a machine without it, the session
        # tests still run their bash tool uses, unsandboxed, and the sandbox's own tests skip.
        REVERIE_SANDBOX="none",
        # The one non-public address tests serve pages from; the stack stays on 127.0.0.1,
        # which sessions must never reach.
        REVERIE_EGRESS_ALLOW_NETWORKS="127.0.0.2/32",
    )


@pytest.fixture(scope="session")
async def temporal_client(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address or "", data_converter=pydantic_data_converter
    )


@pytest.fixture(scope="session")
async def worker(temporal_client: Client, settings: Settings) -> AsyncIterator[None]:
    pool = await connect(settings.database_url or "")
    async with build_worker(temporal_client, pool, settings):
        yield
    await pool.close()


@pytest.fixture(scope="session")
async def reverie(settings: Settings, worker: None) -> AsyncIterator[ReverieClient]:
    client = await ReverieClient.connect(settings)
    yield client
    await client.close()


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    """A model name of the test's own, so the shared fake model keeps its script apart."""
    return f"fake-{request.node.name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def own_queue(settings: Settings) -> AsyncIterator[ReverieClient]:
    """A client on a task queue of the test's own, served only by the worker processes the test
    starts (and kills)."""
    queue_settings = settings.model_copy(update={"task_queue": f"own-{uuid.uuid4().hex[:6]}"})
    client = await ReverieClient.connect(queue_settings)
    yield client
    await client.close()
