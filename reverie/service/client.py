"""The operations every front end shares: the `reverie` command, the HTTP API and user code.

Everything is validated here, at the edge, before anything is written: a bad request raises a
`ReverieError` subclass with a message meant for a person, and leaves no trace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from reverie import memory_files
from reverie.connections import connect_database, connect_temporal, database_url
from reverie.models.agents import MAX_VERSION, Agent, AgentCreate, AgentUpdate, check_supported
from reverie.models.common import Page, PageRequest, new_id, patch_metadata
from reverie.models.environments import (
    Environment,
    EnvironmentCreate,
    EnvironmentDeleted,
    EnvironmentUpdate,
)
from reverie.models.errors import (
    InvalidRequestError,
    NotFoundError,
    NotSupportedError,
    ReverieError,
)
from reverie.models.events import (
    Event,
    InputEvent,
    UserDefineOutcome,
    check_event_count,
    parse_input_event,
)
from reverie.models.sessions import (
    DEFAULT_ENVIRONMENT_ID,
    SESSION_STATUSES,
    Session,
    SessionCreate,
    SessionMetadata,
    SessionUpdate,
)
from reverie.models.workflow_io import (
    CarriedState,
    EventEcho,
    InputRef,
    SendEventsInput,
    SessionOptions,
    SessionWorkflowInput,
)
from reverie.service import threads as thread_service
from reverie.service.dreams import DreamMethods
from reverie.service.memory import MemoryMethods, resolve_session_resources
from reverie.service.threads import ThreadMethods
from reverie.service.validation import check_id as _check_id
from reverie.service.validation import invalid as _invalid
from reverie.service.validation import parse as _parse
from reverie.service.webhooks import WebhookMethods
from reverie.settings import Settings, load_settings
from reverie.store import agents, environments, events, sessions
from reverie.store import outcomes as outcome_store
from reverie.store.event_feed import EventFeed
from reverie.store.pool import Pool
from reverie.workflows.session import AGENT_ID, SESSION_STATUS, SessionWorkflow

SETTLED_EVENTS = ("session.status_idle", "session.status_terminated")
# Largest serialised argument the client hands Temporal (a start's input, an update's events).
# Temporal warns above 512 KiB per payload, fails a payload above 2 MiB and a gRPC message above
# 4 MB (see temporal-notes); staying under the warning keeps every request clear of both hard
# limits, and a request that would cross it is refused before anything is written. Content
# never travels this way (it is staged in PostgreSQL), so only ids count towards it.
MAX_TEMPORAL_PAYLOAD_BYTES = 512 * 1024
# Most events one `list_events` call returns (API lists page by 100; tools read more at once).
MAX_EVENTS_LISTED = 10_000
# Event positions are PostgreSQL integers.
MAX_POSITION = 2**31 - 1
# Followers wait on the event feed (a NOTIFY per commit); this is how often they read anyway, in
# case a notification never comes. Only latency rides on it, never an event.
SAFETY_REREAD_SECONDS = 2.0
# First pause before asking a session's workflow again whether it has settled, when the log
# already says idle (a model step records its turn's end; the workflow hears of it a moment
# later); doubled on each further ask.
SETTLE_RECHECK_SECONDS = 0.01
# Events one read of `follow_events` takes; a shorter batch means it has caught up.
FOLLOW_BATCH = 500


def _check_temporal_size(value: BaseModel, what: str) -> None:
    size = len(value.model_dump_json().encode())
    if size > MAX_TEMPORAL_PAYLOAD_BYTES:
        raise InvalidRequestError(
            f"{what} would make a Temporal message of {size:,} bytes, more than the "
            f"{MAX_TEMPORAL_PAYLOAD_BYTES:,} Reverie allows (Temporal refuses payloads over "
            "2 MiB): send fewer events at once"
        )


def _parse_events(raw: Sequence[Any], what: str = "a request") -> list[InputEvent]:
    """Every event valid, and no more of them than one request may carry."""
    if isinstance(raw, str | bytes | dict) or not isinstance(raw, Sequence):
        raise InvalidRequestError("events must be a list of event objects")
    try:
        check_event_count(len(raw), what)
    except ValueError as error:
        raise InvalidRequestError(str(error)) from None
    parsed = []
    for index, event in enumerate(raw):
        try:
            parsed.append(parse_input_event(event))
        except ValidationError as error:
            raise InvalidRequestError(f"events[{index}]: {_invalid(error).message}") from None
        except ValueError as error:
            raise InvalidRequestError(f"events[{index}]: {error}") from None
    return parsed


def _refuse_unsupported(parsed: list[InputEvent]) -> None:
    outcomes = [event for event in parsed if isinstance(event, UserDefineOutcome)]
    for event in outcomes:
        if event.rubric.type == "file":
            raise NotSupportedError(
                "file rubrics ({type: file, file_id}) are not supported yet: Reverie has no "
                "Files API; send the rubric inline as {type: text, content}"
            )
    if len(outcomes) > 1:
        raise InvalidRequestError(
            "only one outcome may be active at a time: send one user.define_outcome"
        )


def _payload(event: InputEvent) -> dict[str, Any]:
    """An input event as it is recorded. `user.define_outcome` gets its `outcome_id` here (its
    echo carries it) and leaves out Reverie's `grader` options when none were given."""
    payload = event.model_dump(mode="json", exclude={"type"})
    if isinstance(event, UserDefineOutcome):
        if event.grader is None:
            payload.pop("grader")
        payload["outcome_id"] = new_id("outc")
    return payload


def _ref(event_id: str, event: InputEvent, payload: dict[str, Any]) -> InputRef:
    return InputRef(
        id=event_id,
        type=event.type,
        tool_use_id=getattr(event, "tool_use_id", None),
        custom_tool_use_id=getattr(event, "custom_tool_use_id", None),
        result=getattr(event, "result", None),
        session_thread_id=getattr(event, "session_thread_id", None),
        outcome_id=payload.get("outcome_id"),
        max_iterations=payload.get("max_iterations")
        if event.type == "user.define_outcome"
        else None,
    )


# How long a send keeps retrying while the session's workflow cannot take updates (a workflow
# task failing as workers die is refused with FAILED_PRECONDITION until a worker completes it).
SEND_RETRY_SECONDS = 120.0
_TRANSIENT_RPC = {
    RPCStatusCode.FAILED_PRECONDITION,
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
}


class ReverieClient(MemoryMethods, WebhookMethods, ThreadMethods, DreamMethods):
    """One Temporal client, one database pool and one event feed (a LISTEN connection, opened
    on first use); cheap to share, close it when done."""

    def __init__(
        self, temporal: Client, pool: Pool, settings: Settings, feed: EventFeed | None = None
    ) -> None:
        self.temporal = temporal
        self.pool = pool
        self.settings = settings
        self.feed = feed if feed is not None else EventFeed(database_url(settings))

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> ReverieClient:
        settings = settings or load_settings()
        return cls(await connect_temporal(settings), await connect_database(settings), settings)

    async def close(self) -> None:
        await self.feed.close()
        await self.pool.close()

    async def __aenter__(self) -> ReverieClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # ---- agents ------------------------------------------------------------------------------

    async def create_agent(self, params: AgentCreate | dict[str, Any]) -> Agent:
        params = _parse(AgentCreate, params)
        check_supported(params)
        return await thread_service.create_agent(self.pool, params)

    async def update_agent(self, agent_id: str, params: AgentUpdate | dict[str, Any]) -> Agent:
        params = _parse(AgentUpdate, params)
        current = await agents.get(self.pool, _check_id("agent", agent_id))
        try:
            check_supported(params.apply_to(current))
        except ValidationError as error:
            raise _invalid(error) from None
        params = await thread_service.pin_roster(self.pool, params, current)
        return await agents.update(self.pool, agent_id, params)

    async def get_agent(self, agent_id: str, version: int | None = None) -> Agent:
        if version is not None and not 1 <= version <= MAX_VERSION:
            raise InvalidRequestError(f"version must be 1 to {MAX_VERSION}, not {version}")
        return await agents.get(self.pool, _check_id("agent", agent_id), version)

    async def list_agents(
        self,
        *,
        limit: int = 20,
        page: str | None = None,
        include_archived: bool = False,
        created_at_gte: datetime | None = None,
        created_at_lte: datetime | None = None,
    ) -> Page[Agent]:
        paging = _parse(PageRequest, {"limit": limit, "page": page})
        return await agents.list_agents(
            self.pool,
            limit=paging.limit,
            page=paging.page,
            include_archived=include_archived,
            created_at_gte=created_at_gte,
            created_at_lte=created_at_lte,
        )

    async def agent_versions(self, agent_id: str) -> list[Agent]:
        return await agents.versions(self.pool, _check_id("agent", agent_id))

    async def list_agent_versions(
        self, agent_id: str, *, limit: int = 20, page: str | None = None
    ) -> Page[Agent]:
        """An agent's versions, newest first, a page at a time (the API's `versions` list)."""
        paging = _parse(PageRequest, {"limit": limit, "page": page})
        return await agents.versions_page(
            self.pool, _check_id("agent", agent_id), limit=paging.limit, page=paging.page
        )

    async def archive_agent(self, agent_id: str) -> Agent:
        return await agents.archive(self.pool, _check_id("agent", agent_id))

    # ---- environments ------------------------------------------------------------------------

    async def create_environment(self, params: EnvironmentCreate | dict[str, Any]) -> Environment:
        return await environments.create(self.pool, _parse(EnvironmentCreate, params))

    async def get_environment(self, environment_id: str) -> Environment:
        return await environments.get(self.pool, _check_id("environment", environment_id))

    async def update_environment(
        self, environment_id: str, params: EnvironmentUpdate | dict[str, Any]
    ) -> Environment:
        params = _parse(EnvironmentUpdate, params)
        try:
            return await environments.update(
                self.pool, _check_id("environment", environment_id), params
            )
        except ValidationError as error:
            raise _invalid(error) from None

    async def list_environments(
        self, *, limit: int = 20, page: str | None = None, include_archived: bool = False
    ) -> Page[Environment]:
        paging = _parse(PageRequest, {"limit": limit, "page": page})
        return await environments.list_environments(
            self.pool, limit=paging.limit, page=paging.page, include_archived=include_archived
        )

    async def archive_environment(self, environment_id: str) -> Environment:
        _check_id("environment", environment_id)
        if environment_id == DEFAULT_ENVIRONMENT_ID:
            raise InvalidRequestError("the default environment cannot be archived")
        return await environments.archive(self.pool, environment_id)

    async def delete_environment(self, environment_id: str) -> EnvironmentDeleted:
        """Delete for good; refused for the default environment and one sessions still use."""
        await environments.delete(self.pool, _check_id("environment", environment_id))
        return EnvironmentDeleted(id=environment_id)

    # ---- sessions ----------------------------------------------------------------------------

    async def create_session(
        self, params: SessionCreate | dict[str, Any], *, options: SessionOptions | None = None
    ) -> Session:
        """Create a session with its initial events: it exists with all of them, or not at all.

        Everything is validated first. The row and the initial events are then written in one
        transaction, and the workflow starts with those events already queued (its start input
        carries their ids, as a continued run carries its queue), so no later step can fail
        and leave a session without its events. If Temporal refuses the start, the row and its
        events are removed again.
        """
        params = _parse(SessionCreate, params)
        missing = params.unsupported()
        if missing:
            raise NotSupportedError(missing)
        resources = await resolve_session_resources(self.pool, params.resources)
        environment = await environments.get(
            self.pool, _check_id("environment", params.environment_id or DEFAULT_ENVIRONMENT_ID)
        )
        if environment.archived_at is not None:
            raise InvalidRequestError(f"environment {environment.id} is archived")
        initial = (
            _parse_events(params.initial_events, "initial_events") if params.initial_events else []
        )
        _refuse_unsupported(initial)
        for event in initial:
            if event.type not in ("user.message", "user.define_outcome"):
                raise InvalidRequestError(
                    f"initial_events may hold user.message or user.define_outcome, not {event.type}"
                )
        ref = params.agent_ref()
        agent = await agents.get(self.pool, ref.id, ref.version)
        if agent.archived_at is not None:
            raise InvalidRequestError(f"agent {agent.id} is archived; it cannot start sessions")
        session_id = new_id("sesn")
        rows = [(new_id("sevt"), event.type, _payload(event)) for event in initial]
        refs = [
            _ref(event_id, event, payload)
            for (event_id, _, payload), event in zip(rows, initial, strict=True)
        ]
        options = options or SessionOptions(
            model_max_attempts=self.settings.model_max_attempts,
            model_timeout_seconds=self.settings.model_timeout_seconds,
        )
        # Messages start the first turn at once: its running status is recorded here, with
        # them, rather than by the workflow a moment later (patch `created-running`).
        running = bool(rows) and all(kind == "user.message" for _, kind, _ in rows)
        start = SessionWorkflowInput(
            session_id=session_id,
            agent_id=agent.id,
            agent_version=agent.version,
            environment_id=environment.id,
            title=params.title,
            options=options,
            carried=(
                CarriedState(queued=refs, status="running" if running else "idle") if refs else None
            ),
            started_running=running,
            roster=await thread_service.session_roster(self.pool, agent),
        )
        _check_temporal_size(start, "the session's start")
        now = datetime.now(UTC)
        status = [(new_id("sevt"), "session.status_running", {})] if running else []
        # One call: the row, its announcement, its events (and their outcome, if one is defined).
        written = await sessions.create(
            self.pool,
            session_id,
            agent,
            environment_id=environment.id,
            title=params.title,
            metadata=params.metadata,
            resources=resources,
            running=running,
            rows=[(*row, now) for row in rows + status],
        )
        try:
            await self.temporal.start_workflow(
                SessionWorkflow.run,
                start,
                id=session_id,
                task_queue=self.settings.task_queue,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(AGENT_ID, agent.id),
                        SearchAttributePair(SESSION_STATUS, "running" if running else "idle"),
                    ]
                ),
                static_summary=params.title or f"session of {agent.name}",
                static_details=f"agent {agent.id} version {agent.version}",
                # A worker in this process on this client (`reverie up`, the benches) gets the
                # first workflow task in the start's answer, skipping matching; elsewhere the
                # SDK does not ask for it.
                request_eager_start=True,
            )
        except BaseException as error:
            started = await asyncio.shield(self._workflow_exists(session_id))
            if not started:
                await asyncio.shield(sessions.discard(self.pool, session_id))
                raise
            if isinstance(error, asyncio.CancelledError):
                raise
            # Started after all: only the answer to the start was lost.
        # The session as written, not read again (what a read right after the start shows).
        return await sessions.created(
            self.pool,
            written,
            agent,
            outcomes_defined=any(kind == "user.define_outcome" for _, kind, _ in rows),
        )

    async def _workflow_exists(self, session_id: str) -> bool:
        """Whether a start whose call failed happened anyway; False when Temporal cannot say
        (it is then most likely unreachable, and the start did not get through)."""
        try:
            await self.temporal.get_workflow_handle(session_id).describe()
        except Exception:
            return False
        return True

    async def get_session(self, session_id: str) -> Session:
        return await sessions.get(self.pool, _check_id("session", session_id))

    async def list_sessions(
        self,
        *,
        limit: int = 20,
        page: str | None = None,
        agent_id: str | None = None,
        agent_version: int | None = None,
        statuses: Sequence[str] | None = None,
        include_archived: bool = False,
        order: Literal["asc", "desc"] = "desc",
        created_at_gt: datetime | None = None,
        created_at_gte: datetime | None = None,
        created_at_lt: datetime | None = None,
        created_at_lte: datetime | None = None,
    ) -> Page[Session]:
        """Sessions newest first (`order="asc"`: oldest first), filtered as the API filters."""
        paging = _parse(PageRequest, {"limit": limit, "page": page})
        if order not in ("asc", "desc"):
            raise InvalidRequestError(f"order must be asc or desc, not {order!r}")
        unknown = [s for s in statuses or () if s not in SESSION_STATUSES]
        if unknown:
            raise InvalidRequestError(
                f"not session statuses: {unknown!r}; statuses are {', '.join(SESSION_STATUSES)}"
            )
        if agent_version is not None and not 1 <= agent_version <= MAX_VERSION:
            raise InvalidRequestError(f"agent_version must be 1 to {MAX_VERSION}")
        where = sessions.SessionFilter(
            agent_id=None if agent_id is None else _check_id("agent", agent_id),
            agent_version=agent_version if agent_id is not None else None,
            statuses=tuple(statuses) if statuses else None,
            created_at_gt=created_at_gt,
            created_at_gte=created_at_gte,
            created_at_lt=created_at_lt,
            created_at_lte=created_at_lte,
            include_archived=include_archived,
        )
        return await sessions.list_sessions(
            self.pool, limit=paging.limit, page=paging.page, where=where, ascending=order == "asc"
        )

    async def update_session(
        self, session_id: str, params: SessionUpdate | dict[str, Any]
    ) -> Session:
        """Change a session's title or metadata (metadata patched key by key)."""
        params = _parse(SessionUpdate, params)
        if params.agent is not None:
            raise NotSupportedError("updating a session's agent is not supported yet")
        if params.vault_ids:
            raise NotSupportedError("vaults (vault_ids) are not supported yet")
        if params.budget is not None:
            raise NotSupportedError("session budgets are not supported yet")
        current = await sessions.get(self.pool, _check_id("session", session_id))
        metadata = current.metadata
        if params.metadata is not None:
            patched = patch_metadata(current.metadata, params.metadata)
            metadata = _parse(SessionMetadata, {"metadata": patched}).metadata
        return await sessions.update(
            self.pool,
            session_id,
            title=params.title,
            set_title="title" in params.model_fields_set,
            metadata=metadata,
        )

    async def delete_session(self, session_id: str) -> None:
        """Delete a session for good: refused while it runs (as the hosted API refuses it);
        otherwise its workflow is ended and every row it holds removed."""
        session = await sessions.get(self.pool, _check_id("session", session_id))
        if session.status in ("running", "rescheduling"):
            raise InvalidRequestError(
                f"session {session_id} is {session.status}; interrupt it, or wait until it is "
                "idle, before deleting it"
            )
        if session.archived_at is None:
            await self.archive_session(session_id)
        handle = self.temporal.get_workflow_handle(session_id)
        try:
            await handle.terminate(reason="session deleted")
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
        await self.end_thread_workflows(session_id)  # its subagent threads (issue 18)
        await sessions.delete(self.pool, session_id)
        await asyncio.to_thread(
            memory_files.remove_session_folder, self.settings.workspaces, session_id
        )

    async def send_events(self, session_id: str, raw_events: Sequence[Any]) -> list[Event]:
        """Send 1 to 50 input events; answers each with its recorded form (id, processed_at)."""
        _check_id("session", session_id)
        return await self._send(session_id, _parse_events(raw_events))

    async def send_message(self, session_id: str, text: str) -> Event:
        return (await self.send_events(session_id, [{"type": "user.message", "content": text}]))[0]

    async def interrupt(self, session_id: str) -> Event:
        return (await self.send_events(session_id, [{"type": "user.interrupt"}]))[0]

    async def _send(self, session_id: str, parsed: list[InputEvent]) -> list[Event]:
        _refuse_unsupported(parsed)
        staged = [(new_id("sevt"), event.type, _payload(event)) for event in parsed]
        ids = [event_id for event_id, _, _ in staged]
        refs = [
            _ref(event_id, event, payload)
            for (event_id, _, payload), event in zip(staged, parsed, strict=True)
        ]
        update = SendEventsInput(events=refs)
        _check_temporal_size(update, "these events")
        # Staged only into a session that takes events (one round trip with the check).
        if not await events.stage_if_live(self.pool, session_id, staged):
            status, archived = await sessions.status_of(self.pool, session_id)
            raise InvalidRequestError(
                f"session {session_id} is {'archived' if archived else status}; "
                "it takes no more events"
            )
        handle = self.temporal.get_workflow_handle_for(SessionWorkflow.run, session_id)
        try:
            echoes = await self._deliver(handle, update, update_id=f"send-{ids[0]}")
        except BaseException as error:
            # Whatever went wrong, staged rows must not linger. Unstaging is safe: an update
            # that already recorded them deleted them; one that had not cannot record them now.
            await asyncio.shield(events.unstage(self.pool, ids))
            recorded = await events.get_many(self.pool, ids)
            if recorded and not isinstance(error, asyncio.CancelledError):
                # Recorded, but the session never confirmed taking them: a workflow task that
                # recorded them may have been lost with its worker. Saying "sent" could lose a
                # message silently; saying so lets the caller look and decide.
                raise ReverieError(
                    f"session {session_id} recorded the events {[e.id for e in recorded]} but "
                    f"did not confirm taking them up ({error}); check the session's events "
                    "before sending again"
                ) from None
            if isinstance(error, WorkflowUpdateFailedError):
                raise InvalidRequestError(_cause_message(error)) from None
            if isinstance(error, RPCError) and error.status == RPCStatusCode.NOT_FOUND:
                raise InvalidRequestError(f"session {session_id} is not running") from None
            raise
        stamps = {echo.id: echo.processed_at for echo in echoes}
        if set(stamps) != set(ids):
            return await events.get_many(self.pool, ids)
        # The echoes carry what the log holds (ids and stamps read back in the recording
        # transaction); the payloads are what was staged: no need to read the events again.
        return [
            events.recorded_event(session_id, event_id, kind, payload, stamps[event_id])
            for event_id, kind, payload in staged
        ]

    async def _deliver(
        self, handle: Any, update: SendEventsInput, *, update_id: str
    ) -> list[EventEcho]:
        """The update, retried while the session's workflow cannot take it yet (its workflow
        task failing while workers die, an RPC deadline): under one update id, so Temporal runs
        it once however often it is sent, and a retry of one that completed returns its answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SEND_RETRY_SECONDS
        delay = 0.2
        while True:
            try:
                return await handle.execute_update(
                    SessionWorkflow.send_events, update, id=update_id
                )
            except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as error:
                transient = isinstance(error, WorkflowUpdateRPCTimeoutOrCancelledError) or (
                    error.status in _TRANSIENT_RPC
                )
                if not transient or loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def archive_session(self, session_id: str) -> Session:
        session = await sessions.get(self.pool, _check_id("session", session_id))
        if session.archived_at is not None:
            return session
        handle = self.temporal.get_workflow_handle_for(SessionWorkflow.run, session_id)
        try:
            await handle.execute_update(SessionWorkflow.archive)
        except WorkflowUpdateFailedError as error:
            raise InvalidRequestError(_cause_message(error)) from None
        # Archived only when idle, so every tool run's write-back is done: the mounts go.
        await asyncio.to_thread(
            memory_files.remove_session_folder, self.settings.workspaces, session_id
        )
        return await sessions.get(self.pool, session_id)

    async def outcome_verdicts(self, session_id: str, outcome_id: str) -> list[dict[str, Any]]:
        """Each recorded evaluation of an outcome, in order, with the grader's structured
        verdict (per-criterion results) and every sample's verdict (Reverie's own addition;
        the API shows only the result and its explanation)."""
        _check_id("session", session_id)
        found = await outcome_store.get(self.pool, _check_id("outcome", outcome_id))
        if found.session_id != session_id:
            raise NotFoundError(f"session {session_id} has no outcome {outcome_id!r}")
        return [
            {
                "evaluation_id": e.id,
                "result": e.result,
                "explanation": e.explanation,
                "verdict": e.verdict,
                "usage": e.usage,
            }
            for e in await outcome_store.evaluations(self.pool, outcome_id)
        ]

    # ---- events ------------------------------------------------------------------------------

    async def list_events(
        self,
        session_id: str,
        *,
        after: int = 0,
        limit: int = 100,
        types: Sequence[str] | None = None,
        order: Literal["asc", "desc"] = "asc",
        created_at_gt: datetime | None = None,
        created_at_gte: datetime | None = None,
        created_at_lt: datetime | None = None,
        created_at_lte: datetime | None = None,
    ) -> list[Event]:
        """A session's events in log order (`after` skips the first N), filtered as the API's
        list call filters them."""
        await sessions.status_of(self.pool, _check_id("session", session_id))
        if not 1 <= limit <= MAX_EVENTS_LISTED:
            raise InvalidRequestError(f"limit must be 1 to {MAX_EVENTS_LISTED:,}, not {limit}")
        if not 0 <= after <= MAX_POSITION:
            raise InvalidRequestError(f"after must be 0 to {MAX_POSITION}, not {after}")
        if order not in ("asc", "desc"):
            raise InvalidRequestError(f"order must be asc or desc, not {order!r}")
        unknown = [t for t in types or () if not isinstance(t, str) or "\x00" in t]
        if unknown:
            raise InvalidRequestError(f"not event types: {unknown!r}")
        found, _ = await events.list_events(
            self.pool,
            session_id,
            after_position=after,
            limit=limit,
            types=types,
            descending=order == "desc",
            created=events.TimeRange(
                gt=created_at_gt, gte=created_at_gte, lt=created_at_lt, lte=created_at_lte
            ),
        )
        return found

    async def events_page(
        self,
        session_id: str,
        *,
        limit: int = 20,
        page: str | None = None,
        types: Sequence[str] | None = None,
        order: Literal["asc", "desc"] = "asc",
        created_at_gt: datetime | None = None,
        created_at_gte: datetime | None = None,
        created_at_lt: datetime | None = None,
        created_at_lte: datetime | None = None,
    ) -> Page[Event]:
        """The API's event list: a page of a session's events, with a cursor to the next."""
        paging = _parse(PageRequest, {"limit": limit, "page": page})
        await sessions.status_of(self.pool, _check_id("session", session_id))
        if order not in ("asc", "desc"):
            raise InvalidRequestError(f"order must be asc or desc, not {order!r}")
        position = _event_cursor(paging.page)
        positions: list[int] = []
        found, _ = await events.list_events(
            self.pool,
            session_id,
            after_position=position if order == "asc" and position is not None else 0,
            before_position=position if order == "desc" else None,
            limit=paging.limit + 1,
            types=types,
            descending=order == "desc",
            created=events.TimeRange(
                gt=created_at_gt, gte=created_at_gte, lt=created_at_lt, lte=created_at_lte
            ),
            return_positions=positions,
        )
        if len(found) <= paging.limit:
            return Page(data=found)
        # The cursor is the position of the last event on this page.
        return Page(data=found[: paging.limit], next_page=f"p{positions[paging.limit - 1]}")

    async def event_position(self, session_id: str, event_id: str) -> int:
        """Where `event_id` sits in the session's log (a stream resumes after it)."""
        position = await events.position_of(
            self.pool, _check_id("session", session_id), _check_id("event", event_id)
        )
        if position is None:
            raise InvalidRequestError(f"session {session_id} has no event {event_id!r}")
        return position

    async def last_position(self, session_id: str) -> int:
        return await events.last_position(self.pool, _check_id("session", session_id))

    async def follow_events(
        self,
        session_id: str,
        *,
        after: int = 0,
        until_settled: bool = True,
        poll_seconds: float = SAFETY_REREAD_SECONDS,
        timeout: float | None = None,
    ) -> AsyncIterator[Event]:
        """Events as they are recorded; stops after the session settles (idle or terminated)
        once something happened, when `until_settled`.

        Between reads it waits on the event feed, which rings when a commit adds events to the
        session (one LISTEN connection per client, however many follow), rather than polling;
        `poll_seconds` is only how often it reads anyway, in case a notification is missed."""
        await sessions.status_of(self.pool, _check_id("session", session_id))
        if not 0 <= after <= MAX_POSITION:
            raise InvalidRequestError(f"after must be 0 to {MAX_POSITION}, not {after}")
        deadline = None if timeout is None else time.monotonic() + timeout
        position = after
        # Subscribed before the first read: a commit after that read rings, none slips between.
        last_type: str | None = None
        backoff = SETTLE_RECHECK_SECONDS
        async with self.feed.subscribe(session_id) as news:
            while True:
                batch, position = await events.list_events(
                    self.pool, session_id, after_position=position, limit=FOLLOW_BATCH
                )
                for event in batch:
                    yield event
                if batch:
                    last_type = batch[-1].type
                    backoff = SETTLE_RECHECK_SECONDS
                settling = until_settled and last_type in SETTLED_EVENTS
                if settling:
                    status, _ = await sessions.status_of(self.pool, session_id)
                    if status in ("idle", "terminated") and not await self._has_pending(session_id):
                        return
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"session {session_id} did not settle within {timeout}s")
                if len(batch) < FOLLOW_BATCH:  # caught up: wait for news
                    wait = poll_seconds
                    if settling:
                        # The log says idle and the workflow has not caught up yet (a model
                        # step writes its turn's end with its answer): ask again soon.
                        wait, backoff = min(wait, backoff), min(backoff * 2, poll_seconds)
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - time.monotonic()))
                    await news.wait(wait)

    async def _has_pending(self, session_id: str) -> bool:
        handle = self.temporal.get_workflow_handle_for(SessionWorkflow.run, session_id)
        try:
            state = await handle.query(SessionWorkflow.state)
        except Exception:
            return False
        return bool(state.queued) or state.status in ("running", "rescheduling")

    async def wait_until_settled(self, session_id: str, *, timeout: float = 60.0) -> Session:
        """Wait until the session is idle (or terminated) with nothing queued: checked again
        whenever the event feed rings for the session (every status change records an event in
        the same commit), and every `SAFETY_REREAD_SECONDS` in case a ring goes missing."""
        deadline = time.monotonic() + timeout
        _check_id("session", session_id)
        backoff = SETTLE_RECHECK_SECONDS
        async with self.feed.subscribe(session_id) as news:
            while True:
                session = await sessions.get(self.pool, session_id)
                settling = session.status in ("idle", "terminated")
                if settling and not await self._has_pending(session_id):
                    return session
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"session {session_id} is still {session.status}")
                wait = SAFETY_REREAD_SECONDS
                if settling:
                    # Recorded idle, and the workflow has not caught up yet: a model step writes
                    # its turn's end with its answer, and the workflow hears of it a moment
                    # later (no event marks that): ask again soon.
                    wait, backoff = backoff, min(backoff * 2, SAFETY_REREAD_SECONDS)
                else:
                    backoff = SETTLE_RECHECK_SECONDS
                await news.wait(min(left, wait))


def _event_cursor(page: str | None) -> int | None:
    """The position an event list's `page` cursor names (`p<position>`)."""
    if page is None:
        return None
    if page.startswith("p") and page[1:].isdigit() and len(page) < 12:
        return int(page[1:])
    raise InvalidRequestError(f"invalid page cursor {page!r}")


def _cause_message(error: WorkflowUpdateFailedError) -> str:
    cause = error.cause
    while cause is not None and getattr(cause, "cause", None) is not None:
        cause = cause.cause
    return str(getattr(cause, "message", None) or cause or error)
