"""`model_step`: one Messages API call, recorded exactly once.

The workflow passes ids; this activity loads the transcript, calls the model through the
official SDK (its own retries off: retries are durable, so they survive a crash and show in the
Web UI), and records the answer, its events and its usage in one transaction keyed by the step id.

Model errors are the workflow's to retry (it counts them, sleeps the backoff this activity
proposes and records the retry status); Temporal retries only attempts lost with a worker. Steps
of runs older than that (`retries_in_workflow` unset) keep the old way: Temporal retries model
errors too, and this activity records their retry status.

Calls go to the beta endpoint, whose answers carry every `BetaStopReason` (the workflow's table
decides what each means) and `compaction` blocks: for a model the API compacts for (the Models
API says so), requests carry `context_management` with `compact_20260112` at the session's
threshold, the blocks are stored verbatim, and `agent.thread_context_compacted` is recorded.
For other models, each result says whether the transcript passed the threshold; the workflow
then has `compact_transcript` (compaction.py) summarise its older part. A 400 "prompt is too
long" is reported as such, so the workflow compacts and tries the step again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from reverie.activities.delegation import roster_tools
from reverie.activities.events import refusals_are_final
from reverie.activities.memory_note import mount_note
from reverie.activities.model_facts import (
    COMPACT_BETA,
    COMPACT_EDIT,
    ModelCatalog,
    prompt_too_long,
)
from reverie.activities.tool_specs import handling, tool_definitions
from reverie.activities.transcript import build_messages, build_system, user_rows
from reverie.models.agents import Agent
from reverie.models.common import derived_id
from reverie.models.sessions import Usage
from reverie.models.workflow_io import (
    Activity,
    AdoptInputsInput,
    ModelErrorDetails,
    ModelStepInput,
    ModelStepResult,
    SettledStep,
    SettleStepInput,
    ToolUseRef,
    UnrunToolUsesInput,
)
from reverie.observability.metrics import METRICS
from reverie.settings import Settings
from reverie.store import agents, events, sessions, steps, transcript
from reverie.store.events import EventRow
from reverie.store.pool import Connection, Pool

# Agent versions a worker keeps in memory (they never change once written).
AGENTS_CACHED = 512
# Statuses worth another try: timeouts, conflicts, rate limits, server errors, overload.
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
HEARTBEAT_EVERY = timedelta(seconds=1)
# TEST HOOK, never set in production: when "1", `model_step` blocks for ever right after it
# committed an answer, without heartbeating, so a test can kill the worker in the window between
# the commit and Temporal hearing of it.
TEST_HOOK_FREEZE_AFTER_COMMIT = "REVERIE_TEST_HOOK_FREEZE_AFTER_COMMIT"
# What `settle_model_step` stores for a step that never committed: a later attempt that finds it
# commits nothing (its answer would contradict what the workflow already decided).
ABANDONED = {"stop_reason": "abandoned", "abandoned": True}
# The longest refusal explanation carried to the workflow (and the idle event).
MAX_STOP_EXPLANATION = 1000
# Error results of tool uses that an answer's stop reason does not let run.
CUT_OFF_RESULT = (
    "Your answer was cut off at {stop_reason}; this tool use may be incomplete and was not run. "
    "Send it again (shorter, or in parts) if it is still needed."
)
NOT_RUN_RESULT = (
    "This tool use was not run: the answer ended with stop_reason {stop_reason}, which runs no "
    "tools."
)


class _AlreadyCommitted(Exception):
    """Raised inside a commit's transaction to roll back what it wrote before learning that an
    earlier attempt of the step committed."""


def model_client(settings: Settings) -> anthropic.AsyncAnthropic:
    """The SDK's client, by default over its aiohttp transport (`anthropic[aiohttp]`), which
    costs a model call about half the CPU of its httpx one (issue 15); proxies from the
    environment apply either way. `REVERIE_MODEL_HTTP=httpx` keeps the SDK's default, which also
    sends TCP keep-alive probes on a call's idle connection (for a NAT that drops connections
    silent for minutes). Whoever makes it closes it (`await client.close()`)."""
    http_client = (
        anthropic.DefaultAioHttpClient(timeout=settings.model_timeout_seconds)
        if settings.model_http == "aiohttp"
        else None
    )
    return anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key or "simulated",
        base_url=settings.anthropic_base_url,
        max_retries=0,
        timeout=settings.model_timeout_seconds,
        http_client=http_client,
    )


def _tokens(raw: Any) -> Usage:
    return Usage(
        input_tokens=getattr(raw, "input_tokens", 0) or 0,
        output_tokens=getattr(raw, "output_tokens", 0) or 0,
        cache_creation_input_tokens=getattr(raw, "cache_creation_input_tokens", 0) or 0,
        cache_read_input_tokens=getattr(raw, "cache_read_input_tokens", 0) or 0,
    )


def usage_of(raw: Any) -> Usage:
    """The answer's usage, with the API's compaction iterations (which its top-level fields
    leave out) added, so a session's usage counts every token it was billed."""
    usage = _tokens(raw)
    for iteration in getattr(raw, "iterations", None) or []:
        if getattr(iteration, "type", None) == "compaction":
            usage = usage.plus(_tokens(iteration))
    return usage


def prompt_tokens(usage: Any) -> int:
    """Tokens of the prompt an answer was given (cached or not)."""
    return (
        (usage.input_tokens or 0)
        + (getattr(usage, "cache_creation_input_tokens", 0) or 0)
        + (getattr(usage, "cache_read_input_tokens", 0) or 0)
    )


def _stop_details(message: Any) -> dict[str, Any] | None:
    details = getattr(message, "stop_details", None)
    if details is None:
        return None
    body: dict[str, Any] = details.model_dump(mode="json", exclude_none=True)
    explanation = body.get("explanation")
    if isinstance(explanation, str) and len(explanation) > MAX_STOP_EXPLANATION:
        body["explanation"] = explanation[: MAX_STOP_EXPLANATION - 1] + "…"
    return body


def _retry_after(error: anthropic.APIStatusError) -> float | None:
    value = error.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(error: Exception) -> tuple[ModelErrorDetails, bool, float | None]:
    """(what to report, whether to retry, the delay the server asked for)."""
    if isinstance(error, anthropic.APITimeoutError):
        return (
            ModelErrorDetails(
                error_type="model_request_failed_error", message="model request timed out"
            ),
            True,
            None,
        )
    if isinstance(error, anthropic.APIConnectionError):
        return (
            ModelErrorDetails(
                error_type="model_request_failed_error", message=f"cannot reach the model: {error}"
            ),
            True,
            None,
        )
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        kind = {429: "model_rate_limited_error", 529: "model_overloaded_error"}.get(
            status, "model_request_failed_error"
        )
        too_long, window = prompt_too_long(error)
        details = ModelErrorDetails(
            error_type=kind,  # type: ignore[arg-type]
            message=f"model answered {status}: {error.message}",
            status_code=status,
            prompt_too_long=too_long,
            context_window_tokens=window,
        )
        return details, status in RETRYABLE_STATUS or status >= 500, _retry_after(error)
    return ModelErrorDetails(error_type="unknown_error", message=repr(error)), True, None


async def call_with_heartbeats(client: anthropic.AsyncAnthropic, request: dict[str, Any]) -> Any:
    """Heartbeats let Temporal notice a dead worker quickly and deliver cancellation.
    The beta endpoint: its answers carry every `BetaStopReason` and `compaction` blocks."""
    call = asyncio.ensure_future(client.beta.messages.create(**request))
    try:
        while True:
            done, _ = await asyncio.wait({call}, timeout=HEARTBEAT_EVERY.total_seconds())
            if done:
                return call.result()
            activity.heartbeat()
    finally:
        if not call.done():
            call.cancel()
            with contextlib.suppress(BaseException):
                await call


def _span_end(
    step_id: str, start_id: str, usage: Usage, is_error: bool
) -> tuple[str, str, dict[str, Any]]:
    """The step's one `span.model_request_end` (its id is the step's, whichever path ends it)."""
    body = {
        "model_request_start_id": start_id,
        "is_error": is_error,
        "model_usage": usage.model_dump(exclude={"active_seconds"}),
    }
    return derived_id("sevt", step_id, "end"), "span.model_request_end", body


class ModelActivities:
    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        client: anthropic.AsyncAnthropic,
        catalog: ModelCatalog | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._client = client
        self._catalog = catalog or ModelCatalog(client, settings)
        self._freeze_after_commit = os.environ.get(TEST_HOOK_FREEZE_AFTER_COMMIT) == "1"
        # What the last steps sent, per session: a step reads only what is new (checked
        # against the database first, see `transcript.read_since`).
        self.transcripts = transcript.TranscriptCache(
            settings.transcript_cache_megabytes * 1_000_000
        )
        # Agent versions never change once written: read each once per worker.
        self._agents: OrderedDict[tuple[str, int], Agent] = OrderedDict()

    async def _agent(self, agent_id: str, version: int) -> Agent:
        key = (agent_id, version)
        agent = self._agents.get(key)
        if agent is None:
            agent = await agents.get(self._pool, agent_id, version)
            self._agents[key] = agent
            if len(self._agents) > AGENTS_CACHED:
                self._agents.popitem(last=False)
        else:
            self._agents.move_to_end(key)
        return agent

    @activity.defn(name=Activity.MODEL_STEP)
    async def model_step(self, params: ModelStepInput) -> ModelStepResult:
        with refusals_are_final(f"record model step {params.step_id}"):
            return await self._step(params)

    async def _step(self, params: ModelStepInput) -> ModelStepResult:
        if params.attempt > 1 or activity.info().attempt > 1:
            # An earlier attempt may have committed (its worker died before reporting it).
            # A first attempt cannot have: its commit would find out anyway (see `_commit`).
            done = await transcript.finished_step(self._pool, params.step_id)
            if done is not None:
                return ModelStepResult.model_validate(done)
        agent = await self._agent(params.agent_id, params.agent_version)
        start_id = derived_id("sevt", params.step_id, "start")
        await self._open(params, start_id)
        request = await self._request(params.session_id, agent, params.continue_answer)
        if params.delegates:  # a coordinator's primary thread (issue 18)
            delegation = await roster_tools(agent, self._agent)
            request["tools"] = [*request.get("tools", []), *delegation]
        try:
            message = await self._call_with_heartbeats(request)
            METRICS.model_request(
                agent.model.id,
                ok=True,
                input_tokens=prompt_tokens(message.usage),
                output_tokens=message.usage.output_tokens or 0,
            )
        except asyncio.CancelledError:
            # Interrupted by the workflow: close the span, so every start has its end. Any
            # other cancel (this attempt timed out or its worker is shutting down) leaves the
            # span to the next attempt, which may still answer, or to the settling of a step
            # given up: closing it here as failed would put its end before its answer.
            details = activity.cancellation_details()
            if details is None or details.cancel_requested:
                await self._record(
                    params.session_id, [_span_end(params.step_id, start_id, Usage(), True)]
                )
            raise
        except Exception as error:
            METRICS.model_request(agent.model.id, ok=False)
            raise await self._failure(params, agent, error) from error
        # The answer exists: record it even if a cancel lands now, and report it, so that every
        # recorded tool use reaches the workflow (which then refuses to run it, if interrupted).
        commit = asyncio.ensure_future(self._commit(params, agent, message, start_id, request))
        try:
            result = await asyncio.shield(commit)
        except asyncio.CancelledError:
            return await commit
        if self._freeze_after_commit:
            await asyncio.Event().wait()  # the test hook: the test kills the worker here
        return result

    @activity.defn(name=Activity.SETTLE_MODEL_STEP)
    async def settle_model_step(self, params: SettleStepInput) -> SettledStep:
        """Decide, once and for all, whether a step the workflow is giving up on committed.

        Its answer if it did (a worker may have died after the commit, before Temporal heard);
        otherwise the step is marked abandoned, so that no straggling attempt can commit later,
        and its span is closed with `is_error`. Run as a local activity; idempotent.
        """
        with refusals_are_final(f"settle model step {params.step_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                # The session's lock before the step's row, as `_commit` takes them.
                await sessions.lock(conn, params.session_id)
                if not await transcript.finish_step(
                    conn, params.step_id, params.session_id, ABANDONED
                ):
                    stored = await transcript.finished_step(conn, params.step_id)
                    if stored is not None and not stored.get("abandoned"):
                        return SettledStep(committed=ModelStepResult.model_validate(stored))
                start_id = derived_id("sevt", params.step_id, "start")
                if await events.get_many(conn, [start_id]):
                    end = _span_end(params.step_id, start_id, Usage(), True)
                    await events.append(conn, params.session_id, [(*end, datetime.now(UTC))])
        return SettledStep()

    @activity.defn(name=Activity.ADOPT_INPUTS)
    async def adopt_inputs(self, params: AdoptInputsInput) -> None:
        """Write an interrupted turn's inputs into the transcript now, so the workflow need not
        carry their ids until the next turn (the next model step sees them all the same)."""
        with refusals_are_final(f"record inputs {params.event_ids} in the transcript"):
            await self._add_inputs(params.session_id, params.event_ids)

    @activity.defn(name=Activity.RECORD_UNRUN_TOOL_USES)
    async def record_unrun_tool_uses(self, params: UnrunToolUsesInput) -> None:
        """An error result for each tool use the answer's stop reason does not let run (and,
        with `adopt`, its transcript row at once, when no later step of the turn will write it).
        Run as a local activity; idempotent (the workflow made the result ids)."""
        template = CUT_OFF_RESULT if params.reason == "cut_off" else NOT_RUN_RESULT
        text = template.format(stop_reason=params.stop_reason)
        now = datetime.now(UTC)
        rows = [
            (
                result_id,
                "agent.tool_result",
                {
                    "tool_use_id": tool_use_id,
                    "content": [{"type": "text", "text": text}],
                    "is_error": True,
                },
                now,
            )
            for tool_use_id, result_id in params.results.items()
        ]
        with refusals_are_final(f"record results of tool uses {list(params.results)}"):
            async with self._pool.acquire() as conn, conn.transaction():
                await events.append(conn, params.session_id, rows)
            if params.adopt:
                await self._add_inputs(params.session_id, list(params.results.values()))

    async def _open(self, params: ModelStepInput, start_id: str) -> None:
        """The step's new inputs into the transcript and its span opened: one call
        (`steps.open_step`), or one append when the step has no new inputs."""
        start = (start_id, "span.model_request_start", {}, datetime.now(UTC))
        if not params.input_event_ids:
            await events.append(self._pool, params.session_id, [start])
            return
        inputs = await events.get_many(self._pool, params.input_event_ids)
        rows = [(f"in:{event_id}", blocks) for event_id, blocks in user_rows(inputs)]
        await steps.open_step(self._pool, params.session_id, rows, start)

    async def _add_inputs(self, session_id: str, event_ids: list[str]) -> None:
        if not event_ids:
            return
        inputs = await events.get_many(self._pool, event_ids)
        # One transcript row per input event, keyed by it: an input held after an interrupted
        # step and sent again is recorded once, whichever step records it first.
        async with self._pool.acquire() as conn, conn.transaction():
            for event_id, blocks in user_rows(inputs):
                await transcript.add(conn, f"in:{event_id}", session_id, "user", blocks)

    async def _request(
        self, session_id: str, agent: Agent, continue_answer: bool = False
    ) -> dict[str, Any]:
        """The Messages API request of the next step (for the beta endpoint: `betas` included).

        A model the API compacts for gets `context_management` with `compact_20260112` at the
        session's threshold; the answers then hold `compaction` blocks, kept verbatim.
        """
        # The transcript, and the session's resources for the section on its memory mounts
        # that follows the system prompt (if it has any), in one query.
        context = await self.transcripts.read_for_step(self._pool, session_id)
        compacted = context.compacted
        note = mount_note(context.resources)
        system_text = (
            (f"{agent.system}\n\n{note}" if agent.system else note) if note else agent.system
        )
        messages = build_messages(
            compacted.entries, summary=compacted.summary, continue_answer=continue_answer
        )
        request: dict[str, Any] = {
            "model": agent.model.id,
            "max_tokens": self._settings.max_tokens,
            "messages": messages,
        }
        system = build_system(system_text)
        if system:
            request["system"] = system
        tools = tool_definitions(agent)
        if tools:
            request["tools"] = tools
        if await self._catalog.uses_api_compaction(agent.model.id):
            trigger = await self._catalog.threshold(agent.model.id)
            request["context_management"] = {
                "edits": [
                    {"type": COMPACT_EDIT, "trigger": {"type": "input_tokens", "value": trigger}}
                ]
            }
            request["betas"] = [COMPACT_BETA]
        return request

    async def _call_with_heartbeats(self, request: dict[str, Any]) -> Any:
        return await call_with_heartbeats(self._client, request)

    async def _failure(
        self, params: ModelStepInput, agent: Agent, error: Exception
    ) -> ApplicationError:
        details, retryable, retry_after = classify(error)
        if details.context_window_tokens:
            self._catalog.learn_window(agent.model.id, details.context_window_tokens)
        category = (
            ApplicationErrorCategory.BENIGN
            if details.error_type == "model_rate_limited_error"
            else ApplicationErrorCategory.UNSPECIFIED
        )
        if params.retries_in_workflow:
            # The workflow decides whether and when to try again; Temporal must not.
            details.retryable = retryable
            if retryable:
                delay = self._backoff(params.attempt, retry_after)
                details.retry_delay_seconds = delay.total_seconds()
            return ApplicationError(
                details.message,
                details.model_dump(),
                type=details.error_type,
                non_retryable=True,
                category=category,
            )
        attempt = activity.info().attempt
        if retryable and attempt < params.max_attempts:
            now = datetime.now(UTC)
            error_payload = {
                "error": {
                    "type": details.error_type,
                    "message": details.message,
                    "retry_status": {"type": "retrying"},
                }
            }
            async with self._pool.acquire() as conn, conn.transaction():
                await events.append(
                    conn,
                    params.session_id,
                    [
                        (
                            derived_id("sevt", params.step_id, "error", str(attempt)),
                            "session.error",
                            error_payload,
                            now,
                        ),
                        (
                            derived_id("sevt", params.step_id, "rescheduled", str(attempt)),
                            "session.status_rescheduled",
                            {},
                            now,
                        ),
                    ],
                )
                await sessions.set_status(conn, params.session_id, "rescheduling")
        delay = self._backoff(attempt, retry_after)
        return ApplicationError(
            details.message,
            details.model_dump(),
            type=details.error_type,
            non_retryable=not retryable,
            next_retry_delay=delay if retryable else None,
            category=category,
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> timedelta:
        """Honour `retry-after` when given, else exponential from 1 s; capped either way."""
        cap = self._settings.model_max_backoff_seconds
        seconds = retry_after if retry_after is not None else 2 ** (attempt - 1)
        return timedelta(seconds=max(0.0, min(seconds, cap)))

    async def _commit(
        self,
        params: ModelStepInput,
        agent: Agent,
        message: Any,
        start_id: str,
        request: dict[str, Any],
    ) -> ModelStepResult:
        # Kept verbatim (a `compaction` block must go back exactly as it came).
        content = [block.model_dump(mode="json", exclude_none=True) for block in message.content]
        usage = usage_of(message.usage)
        rows: list[EventRow] = []
        now = datetime.now(UTC)
        if any(b["type"] == "compaction" for b in content):
            # The API compacted the context before answering.
            compacted = derived_id("sevt", params.step_id, "compacted")
            rows.append((compacted, "agent.thread_context_compacted", {}, now))
        text = [b for b in content if b["type"] == "text"]
        thinking = [b for b in content if b["type"] in ("thinking", "redacted_thinking")]
        if thinking:
            rows.append((derived_id("sevt", params.step_id, "thinking"), "agent.thinking", {}, now))
        if text:
            rows.append(
                (
                    derived_id("sevt", params.step_id, "message"),
                    "agent.message",
                    {"content": [{"type": "text", "text": b["text"]} for b in text]},
                    now,
                )
            )
        tool_uses: list[ToolUseRef] = []
        for index, block in enumerate(content):
            if block["type"] != "tool_use":
                continue
            kind, permission, policy = handling(agent, block["name"], params.delegates)
            event_id = derived_id("sevt", params.step_id, "tool_use", block["id"])
            # The transcript names each tool use by its event id: results then refer to the
            # event (as the API's `tool_use_id` does) and the model sees a matching pair.
            block["id"] = event_id
            tool_uses.append(
                ToolUseRef(
                    event_id=event_id,
                    name=block["name"],
                    kind=kind,
                    evaluated_permission=permission,
                    ends_answer=index == len(content) - 1,
                )
            )
            payload: dict[str, Any] = {"name": block["name"], "input": block["input"]}
            if kind == "builtin":
                payload["evaluated_permission"] = permission
                if policy is not None:
                    payload["evaluation"] = {"type": policy}
            event_type = "agent.custom_tool_use" if kind == "custom" else "agent.tool_use"
            rows.append((event_id, event_type, payload, now))
        rows.append((*_span_end(params.step_id, start_id, usage, False), now))
        # The next request holds at least this prompt and this answer.
        context = prompt_tokens(message.usage) + (message.usage.output_tokens or 0)
        due = "context_management" not in request and context >= await self._catalog.threshold(
            agent.model.id
        )
        result = ModelStepResult(
            stop_reason=message.stop_reason or "end_turn",
            tool_uses=tool_uses,
            usage=usage,
            context_tokens=context,
            compaction_due=due,
            stop_details=_stop_details(message),
        )
        ends = self._may_end_turn(params, result)
        idle = {"stop_reason": {"type": "end_turn"}}
        recorded = result.model_dump(mode="json")

        def commit(db: Pool | Connection, rows: list[EventRow]) -> Awaitable[steps.StepCommit]:
            return steps.commit_step(
                db,
                params.session_id,
                params.step_id,
                result=recorded,
                result_if_idle={**recorded, "idle_recorded": True},
                answer=content,
                rows=rows,
                idle=(params.idle.event_id, idle, now, params.idle.turns) if params.idle else None,
                idle_after=start_id if ends else None,
                usage=usage,
                parent_session_id=params.parent_session_id,
            )

        if params.retries_in_workflow:
            outcome = await commit(self._pool, rows)
        else:
            outcome = await self._commit_resuming(params, rows, now, commit)
        if outcome == "recorded":
            # Another attempt of this step committed first: its answer is the one recorded.
            stored = await transcript.finished_step(self._pool, params.step_id)
            return ModelStepResult.model_validate(stored)
        result.idle_recorded = outcome == "idle"
        return result

    @staticmethod
    def _may_end_turn(params: ModelStepInput, result: ModelStepResult) -> bool:
        """Whether the answer ends the turn by the workflow's rule (`IdleSpec`): it ends it
        (`end_turn`, `stop_sequence`, no tool use); the commit then records the idle status with
        it, if no input reached the session since the step began (checked under the session's
        lock, which every append takes: an input recorded after the commit finds the session
        idle, and starts the next turn)."""
        return (
            params.idle is not None
            and not result.tool_uses
            and (result.stop_reason in ("end_turn", "stop_sequence"))
        )

    async def _commit_resuming(
        self,
        params: ModelStepInput,
        rows: list[EventRow],
        now: datetime,
        commit: Callable[[Connection, list[EventRow]], Awaitable[steps.StepCommit]],
    ) -> steps.StepCommit:
        """The commit of runs older than the patch `MODEL_RETRIES_IN_WORKFLOW` (Temporal
        retries their model errors): a step that succeeds after a retry first records the
        session running again (before its answer, as the hosted API does), in the commit's
        transaction; nothing of it is kept when an earlier attempt had committed."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # The session's lock before the step's row, as settling takes them.
                await sessions.lock(conn, params.session_id)
                status, _ = await sessions.status_of(conn, params.session_id)
                if status == "rescheduling":
                    resumed = derived_id("sevt", params.step_id, "resumed")
                    rows = [(resumed, "session.status_running", {}, now), *rows]
                    await sessions.set_status(conn, params.session_id, "running")
                outcome = await commit(conn, rows)
                if outcome == "recorded":
                    raise _AlreadyCommitted  # rolls the running status back
                return outcome
        except _AlreadyCommitted:
            return "recorded"

    async def _record(self, session_id: str, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
        now = datetime.now(UTC)
        await events.append(self._pool, session_id, [(i, t, p, now) for i, t, p in rows])
