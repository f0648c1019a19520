"""What operators watch (issue 21): Prometheus metrics after a turn, OpenTelemetry spans from the
HTTP API through the workflow to its activities, JSON logs naming their session."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.service import RPCError, RPCStatusCode

from reverie.api.app import start_api
from reverie.connections import connect_temporal
from reverie.models.webhooks import DeliverDueResult
from reverie.observability import tracing
from reverie.observability.interceptor import _read_result
from reverie.observability.logs import JsonFormatter, log_context, without_password
from reverie.observability.metrics import MAX_LABEL_VALUES, METRICS
from reverie.observability.queue_depth import gives_up, stop_reporting
from reverie.service.client import ReverieClient
from reverie.settings import Settings
from reverie.starter.temporal_dev import free_port
from reverie.store import keys
from reverie.store.pool import connect
from reverie.worker import build_worker
from tests.dream_support import findings, operations, session_with, store_with
from tests.fake_model import FakeModelServer, Reply

TOOLSET = {"type": "agent_toolset_20260401", "configs": [{"name": "web_search", "enabled": False}]}


@dataclass
class Observed:
    client: ReverieClient
    spans: InMemorySpanExporter
    metrics_url: str
    base_url: str
    key: str


@pytest.fixture(scope="module")
async def observed(settings: Settings) -> AsyncIterator[Observed]:
    """A worker and an API process of their own, with metrics on a port and traces kept in
    memory (set up as REVERIE_METRICS_PORT and OTEL_EXPORTER_OTLP_ENDPOINT would)."""
    port = free_port()
    own = settings.model_copy(
        update={"task_queue": f"observed-{uuid.uuid4().hex[:6]}", "metrics_port": port}
    )
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use_provider(provider)
    try:
        temporal = await connect_temporal(own)
    finally:
        tracing.use_provider(None)  # other tests' clients stay untraced
    pool = await connect(own.database_url or "")
    client = ReverieClient(temporal, pool, own)
    tracing.use_provider(provider)  # the API's request spans
    runner, base_url = await start_api(client, "127.0.0.1", 0)
    key = (await keys.create(pool, "observability", "tests")).key
    try:
        async with build_worker(temporal, pool, own):
            yield Observed(client, spans, f"http://127.0.0.1:{port}/metrics", base_url, key)
    finally:
        tracing.use_provider(None)
        stop_reporting()
        await runner.cleanup()
        await client.close()


async def _turn(observed: Observed, model: str) -> str:
    """A session through the HTTP API: one bash tool use, then the answer."""
    headers = {"x-api-key": observed.key}
    async with aiohttp.ClientSession(observed.base_url, headers=headers) as http:
        agent = {"name": "o", "model": model, "tools": [TOOLSET]}
        async with http.post("/v1/agents", json=agent) as response:
            agent_id = (await response.json())["id"]
        body = {"agent": agent_id, "environment_id": "env_default"}
        async with http.post("/v1/sessions", json=body) as response:
            session_id = (await response.json())["id"]
        message = {"type": "user.message", "content": [{"type": "text", "text": "hi"}]}
        async with http.post(
            f"/v1/sessions/{session_id}/events", json={"events": [message]}
        ) as response:
            assert response.status == 200, await response.text()
    await observed.client.wait_until_settled(session_id, timeout=30)
    return session_id


async def test_metrics_appear_on_the_endpoint_after_a_turn(
    observed: Observed, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.tool_use("bash", {"command": "echo hi"})])
    await _turn(observed, model_name)
    async with aiohttp.ClientSession() as http, http.get(observed.metrics_url) as response:
        text = await response.text()
    lines = text.splitlines()

    def value(name: str, *labels: str) -> float:
        found = [
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith(name) and all(label in line for label in labels)
        ]
        assert found, f"no {name} with {labels} in:\n{text[:3000]}"
        return sum(found)

    model = f'model="{model_name}"'
    assert value("reverie_model_requests", model, 'outcome="ok"') >= 2
    assert value("reverie_model_input_tokens", model) > 0
    assert value("reverie_model_output_tokens", model) > 0
    assert value("reverie_tool_duration_count", 'tool="bash"', 'is_error="false"') >= 1
    assert value("reverie_turns", 'stop_reason="end_turn"') >= 1
    assert value("reverie_activity_duration_count", 'activity="model_step"') >= 2
    assert value("reverie_api_request_duration_count", 'route="/v1/sessions"') >= 1
    assert value("reverie_task_queue_backlog", 'kind="workflow"') >= 0
    # And the Temporal SDK's own, on the same endpoint.
    assert value("temporal_workflow_task_execution_latency_count") > 0


async def _scrape(observed: Observed) -> str:
    async with aiohttp.ClientSession() as http, http.get(observed.metrics_url) as response:
        return await response.text()


def _sum(text: str, name: str, *labels: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and all(label in line for label in labels)
    )


async def test_dream_durations_and_webhook_outcomes_are_counted(
    observed: Observed, fake_model: FakeModelServer, model_name: str
) -> None:
    """A dream's run lands in reverie_dream_duration (recorded in workflow time); a delivery
    activity's result in reverie_webhook_deliveries."""
    client = observed.client
    agent = (await client.create_agent({"name": "d", "model": model_name})).id
    store = await store_with(client, "Team", {"/a.md": "Use pytest."})
    session = await session_with(client, agent, store, "We use pytest -x.")
    fake_model.script(model_name, [findings(), operations()])
    before = _sum(await _scrape(observed), "reverie_dream_duration_count", 'outcome="ok"')
    created = await client.create_dream(
        {
            "inputs": [
                {"type": "memory_store", "memory_store_id": store},
                {"type": "sessions", "session_ids": [session]},
            ],
            "model": model_name,
        }
    )
    dream = await client.wait_for_dream(created.id)
    assert dream.status == "completed", dream
    after = await _scrape(observed)
    assert _sum(after, "reverie_dream_duration_count", 'outcome="ok"') == before + 1
    assert _sum(after, "reverie_dream_duration_sum", 'workflow_type="DreamWorkflow"') > 0

    _read_result(DeliverDueResult(active=True, delivered=2, failed=1, retrying=3))
    text = await _scrape(observed)
    for outcome, count in (("delivered", 2), ("failed", 1), ("retry", 3)):
        assert _sum(text, "reverie_webhook_deliveries", f'outcome="{outcome}"') >= count


async def test_spans_run_from_the_api_through_workflow_to_activities(
    observed: Observed, fake_model: FakeModelServer, model_name: str
) -> None:
    """The request that creates a session starts the trace its workflow and activities join;
    the request that sends a message traces its update."""
    observed.spans.clear()
    await _turn(observed, model_name)
    spans = observed.spans.get_finished_spans()

    def trace_of(name: str) -> set[str]:
        (root,) = [s for s in spans if s.name == name]
        return {s.name for s in spans if s.context.trace_id == root.context.trace_id}

    created = trace_of("POST /v1/sessions")
    assert {
        "StartWorkflow:SessionWorkflow",
        "RunWorkflow:SessionWorkflow",
        "RunActivity:model_step",
    } <= created, created
    sent = trace_of("POST /v1/sessions/{session_id}/events")
    assert "StartWorkflowUpdate:send_events" in sent, sent
    server = next(s for s in spans if s.name == "POST /v1/sessions")
    assert server.attributes["http.response.status_code"] == 200


async def test_spans_are_exported_by_otlp_when_an_endpoint_is_set() -> None:
    """What OTEL_EXPORTER_OTLP_ENDPOINT sets up: spans posted as OTLP/HTTP protobuf."""
    received: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        provider = tracing.otlp_provider(f"http://127.0.0.1:{port}")
        with provider.get_tracer("test").start_as_current_span("reverie-otlp-probe"):
            pass
        await asyncio.to_thread(provider.force_flush)
        provider.shutdown()
    finally:
        await runner.cleanup()
    assert received and b"reverie-otlp-probe" in b"".join(received)


def test_a_taken_metrics_port_leaves_the_process_without_metrics(observed: Observed) -> None:
    """A second process on the same host and port (a one-shot command beside a running
    server) runs on, without metrics, instead of failing."""
    taken = int(observed.metrics_url.rsplit(":", 1)[1].split("/")[0])
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from reverie.settings import Settings; "
            "from reverie.observability.metrics import metrics_runtime; "
            f"print(metrics_runtime(Settings(REVERIE_METRICS_PORT={taken})))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "None"
    assert "no metrics from this process" in probe.stderr


def test_json_logs_name_their_session_and_thread() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("reverie.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.temporal_activity = {"workflow_id": "sesn_abc", "activity_type": "model_step"}
    line = json.loads(formatter.format(record))
    assert line["message"] == "hello you"
    assert line["session_id"] == "sesn_abc"
    assert line["activity"] == "model_step"
    plain = logging.LogRecord("reverie.x", logging.WARNING, __file__, 1, "x", (), None)
    with log_context(session_id="sesn_1", thread_id="sthr_2"):
        line = json.loads(formatter.format(plain))
    assert (line["session_id"], line["thread_id"], line["level"]) == ("sesn_1", "sthr_2", "warning")
    assert "session_id" not in json.loads(formatter.format(plain))


async def test_saved_histories_replay_with_the_observability_interceptors() -> None:
    """The metrics interceptor and Temporal's tracing interceptor add no workflow command: every
    saved history replays with both on, as workers run with them."""
    from temporalio.client import WorkflowHistory
    from temporalio.contrib.opentelemetry import TracingInterceptor
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Replayer

    from reverie.observability.interceptor import MetricsInterceptor
    from reverie.workflows.dream import DreamWorkflow
    from reverie.workflows.dream_schedule import ScheduledDreamWorkflow
    from reverie.workflows.session import SessionWorkflow
    from reverie.workflows.thread import ThreadWorkflow
    from reverie.workflows.webhooks import WORKFLOWS as WEBHOOK_WORKFLOWS
    from tests.replay.test_replay import HISTORIES

    provider = TracerProvider()
    replayer = Replayer(
        workflows=[
            SessionWorkflow,
            ThreadWorkflow,
            *WEBHOOK_WORKFLOWS,
            DreamWorkflow,
            ScheduledDreamWorkflow,
        ],
        data_converter=pydantic_data_converter,
        interceptors=[MetricsInterceptor(), TracingInterceptor(provider.get_tracer("replay"))],
    )
    assert len(HISTORIES) >= 20
    for path in HISTORIES:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{path.stem}: {result.replay_failure!r}"


async def test_label_values_from_clients_and_models_stay_bounded(observed: Observed) -> None:
    """Anyone may send a request with an odd method (no key needed to be counted: aiohttp's C
    parser knows ~35 methods, its pure-Python one takes any token), and a model server answers
    any stop reason: neither grows the metrics without bound."""
    made_up = ["PROPFIND", "MKCOL", "PURGE"]
    async with aiohttp.ClientSession(observed.base_url) as http:
        for method in made_up:
            async with http.request(method, "/v1/agents") as response:
                assert response.status >= 400
    for n in range(MAX_LABEL_VALUES + 20):
        METRICS.turn(f"made_up_{n}")
    METRICS.tool("made_up_tool", 0.1, is_error=True)  # a model may name any tool
    METRICS.model_request("made_up_model", ok=False)  # and a user any model
    text = await _scrape(observed)
    assert not [m for m in [*made_up, "made_up_tool", "made_up_model"] if m in text]
    assert _sum(text, "reverie_api_request_duration_count", 'method="other"') >= 3
    reasons = {
        line.split('stop_reason="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("reverie_turns") and 'stop_reason="' in line
    }
    assert len(reasons) <= MAX_LABEL_VALUES + 1 and "other" in reasons


def test_log_lines_cannot_be_forged_from_what_they_quote() -> None:
    """A URL path, a model's text or a session id with line breaks (or terminal escapes)
    stays inside its own line, in JSON and in text logs."""
    forged = 'x\n{"level": "error", "message": "forged"}\r\x1b[2J\u2028'
    record = logging.LogRecord("reverie.x", logging.INFO, __file__, 1, "path %s", (forged,), None)
    record.session_id = f"sesn_1\n{forged}"
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert json.loads(line)["message"] == f"path {forged}"
    script = (
        "import logging; from reverie.settings import Settings; "
        "from reverie.observability.logs import configure_logging; "
        "logging.basicConfig(format='%(levelname)s %(message)s'); "
        "configure_logging(Settings(REVERIE_LOG_FORMAT='text')); "
        f"logging.getLogger('x').warning('path %s', {forged!r}); "
        # A call with the wrong arguments is reported by logging, never raised at the caller.
        "logging.getLogger('x').warning('%s %s', 1); print('carried on')"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.stdout == "carried on\n", ran.stderr
    text = ran.stderr.split("--- Logging error ---")[0]
    assert text.count("\n") == 1 and text.startswith("WARNING path x\\n{"), text
    assert "\r" not in text and "\x1b" not in text and "\u2028" not in text


def test_urls_in_log_lines_lose_their_password() -> None:
    """The worker's start line names the model's URL: a proxy's password in it is not logged."""
    assert without_password("https://me:s3cret@proxy:8443/v1") == "https://me:***@proxy:8443/v1"
    assert without_password("http://proxy.internal/") == "http://proxy.internal/"


def test_queue_depth_reporting_outlives_a_temporal_outage() -> None:
    """A server that cannot answer now (restarting, a timeout) is asked again next round;
    only one that never will (no stats, no permission) ends the reporting."""
    for status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        assert not gives_up(RPCError("x", status, b""))
    for status in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.PERMISSION_DENIED):
        assert gives_up(RPCError("x", status, b""))
