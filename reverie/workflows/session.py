"""`SessionWorkflow`: one session, its inputs, its status, and the agent loop of its primary thread.

States: idle -> running (-> rescheduling -> running) -> idle ... -> terminated. The workflow
decides every status: its own state, the `ReverieSessionStatus` search attribute, the session
row and the status event change together. Two of those writes ride on others, by its rule and
with ids it made (issue 15): a turn's running status is written with the message that starts it
(or, for a session created with messages, by its creator with them), and its idle status with
the answer that ends it, by the model step the workflow gave the idle event to; the workflow's
state and the search attribute follow in the same workflow task or the next one.
Inputs arrive through the `send_events` update (validated first, then recorded, then echoed).
The workflow holds only ids and counters; every transcript byte lives in Postgres.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from reverie.models.common import new_id
    from reverie.models.events import INPUT_EVENT_TYPES
    from reverie.models.sessions import SessionStatus
    from reverie.models.threads import ThreadRef, ThreadReply, primary_thread_id
    from reverie.models.workflow_io import (
        Activity,
        CarriedState,
        EventEcho,
        NewEvent,
        PendingToolUse,
        PromoteInputsInput,
        RecordEventsInput,
        SendEventsInput,
        SessionWorkflowInput,
    )
    from reverie.workflows.activity_options import RECORD_RETRY, RECORD_TIMEOUT
    from reverie.workflows.agent_loop import AgentLoop, TurnEnd, TurnOutcome
    from reverie.workflows.outcome import OutcomeLoop
    from reverie.workflows.patches import (
        CREATED_RUNNING,
        PROMOTE_STARTS_TURN,
        THREADS_REQUIRE_ACTION,
        patched,
    )
    from reverie.workflows.recording import SessionBroken, record
    from reverie.workflows.thread_host import ThreadHost

AGENT_ID = SearchAttributeKey.for_keyword("ReverieAgentId")
SESSION_STATUS = SearchAttributeKey.for_keyword("ReverieSessionStatus")
SEARCH_ATTRIBUTES = (AGENT_ID, SESSION_STATUS)
NOT_YET_SUPPORTED: dict[str, str] = {}


@workflow.defn
class SessionWorkflow:
    @workflow.init
    def __init__(self, params: SessionWorkflowInput) -> None:
        self._params = params
        self._state = (params.carried or CarriedState()).model_copy(deep=True)
        self._archiving = False
        self._finished = False
        self._abandon_awaiting = False
        # Tool uses whose answer is being recorded: a second answer is refused meanwhile.
        self._answering: set[str] = set()
        self._record_lock = asyncio.Lock()
        # Set when a write the session needs was refused for good (see `_break`).
        self._broken: SessionBroken | None = None
        # The main loop waits for work (idle, between turns): an input that starts a turn may
        # then record the turn's running status itself (patch `PROMOTE_STARTS_TURN`).
        self._at_rest = False
        # The running status of the next turn is recorded already (by the input that started it).
        self._announced = False
        # (issue 18) A coordinator's subagent threads. Its turn may end while threads still run:
        # the session then stays running (it aggregates its threads) until their replies have
        # been taken in by further turns, or until none runs any more.
        self._threads = ThreadHost(
            params,
            self._state,
            lambda: self._loop.interrupted,
            on_change=self._show,
            on_blocked=self._threads_blocked,
        )
        # Carried through continue-as-new as the state says it: running between turns, with
        # threads (a run that continued mid-turn carries `resume_inputs` instead), or idle
        # only for the client's answers to its threads' tool uses.
        self._still_running = (
            bool(self._state.threads)
            and (
                self._state.status in ("running", "rescheduling")
                or self._state.threads_blocked is not None
            )
            and self._state.resume_inputs is None
        )
        # A turn is under way (`_turn`); with `threads_blocked` set, the session is idle in it.
        self._in_turn = False
        # A history from before patch `threads-require-action`: its session never idles so.
        self._blocked_unpatched = False
        self._loop = AgentLoop(
            ThreadRef(
                session_id=params.session_id,
                agent_id=params.agent_id,
                agent_version=params.agent_version,
                environment_id=params.environment_id,
            ),
            params.options,
            self._state,
            self._take_inputs,
            self._set_status,
            self._continue_as_new,
            ends_turns_with_answers=not self._threads.enabled,
            delegate=self._threads.delegate if self._threads.enabled else None,
        )
        # An outcome wraps the turn (workflows/outcome.py): grade, then revise.
        self._outcome = OutcomeLoop(
            params,
            self._state,
            self._loop.continue_turn,
            self._take_inputs,
            on_change=self._show,
            answers_end_turns=self._answers_end_turns,
        )

    # ---- the state machine -------------------------------------------------------------------

    @workflow.run
    async def run(self, params: SessionWorkflowInput) -> CarriedState:
        try:
            return await self._live()
        except SessionBroken as error:
            return await self._break(error)

    async def _live(self) -> CarriedState:
        self._show()
        if (
            self._params.started_running
            and workflow.info().continued_run_id is None
            and self._state.queued
            and patched(CREATED_RUNNING)
        ):
            # The creator recorded the first turn's running status with the messages.
            self._announced = True
        if self._state.resume_inputs is not None:
            inputs, self._state.resume_inputs = self._state.resume_inputs, None
            await self._turn(lambda: self._loop.continue_turn(inputs), announce=False)
        while True:
            self._at_rest = True
            await workflow.wait_condition(
                lambda: (
                    self._finished
                    or self._broken is not None
                    or self._archiving
                    or self._abandon_awaiting
                    or self._loop.awaiting_all_answered()
                    or self._has_new_work()
                    or self._announced
                    or self._threads_done()
                    or self._blocked_changed()
                    or workflow.info().is_continue_as_new_suggested()
                )
            )
            self._at_rest = False
            if self._finished or self._archiving or self._broken is not None:
                # Archiving: the archive handler finishes the session; start nothing meanwhile.
                await workflow.wait_condition(lambda: self._finished or self._broken is not None)
                if self._broken is not None:
                    raise self._broken
                await workflow.wait_condition(workflow.all_handlers_finished)
                return self._state
            if self._abandon_awaiting:
                self._abandon_awaiting = False
                await self._loop.abandon_awaiting()
                await self._loop.adopt_held()
                await self._outcome.stop()
                await self._idle("end_turn")
            elif self._loop.awaiting_all_answered():
                await self._turn(self._loop.resume_turn)
            elif self._threads_done():
                # The coordinator's turn ended before its threads did; now none runs.
                self._still_running = False
                self._state.threads_blocked = None
                await self._idle("end_turn")
            elif self._has_new_work() or self._announced:
                # (Announced with nothing queued: an interrupt came right after the message
                # that started the turn; the turn then ends at once, interrupted.)
                await self._turn(self._loop.start_turn)
            elif self._blocked_changed():
                # Between turns, running for threads that now all wait for the client (or one
                # of them goes on again).
                await self._threads_blocked(self._threads.blocked())
            else:
                # Idle and history is long: start afresh, carrying only ids and counters.
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not (self._has_new_work() or self._finished or self._abandon_awaiting):
                    self._continue_as_new()

    def _continue_as_new(self) -> None:
        """The session's run starts afresh, carrying its state (the loop's too)."""
        workflow.continue_as_new(
            self._params.model_copy(update={"carried": self._state.model_copy(deep=True)})
        )

    def _threads_done(self) -> bool:
        """(issue 18) Running only for threads that have all ended their turns since."""
        return (
            self._still_running
            and not self._threads.running()
            and not self._has_new_work()
            and not self._state.awaiting
        )

    def _blocked_changed(self) -> bool:
        """(issue 18) Running between turns for threads, and whether they all wait for the
        client has changed since the session last said so."""
        return (
            self._still_running
            and not self._blocked_unpatched
            and self._threads.blocked() != self._state.threads_blocked
        )

    async def _threads_blocked(self, event_ids: list[str] | None) -> None:
        """(issue 18, patch `threads-require-action`) Every running thread waits for the
        client's answers (`event_ids`: the cross-posted tool uses): the session idles with
        `requires_action` naming them (again with the rest, as answers come), as it does for
        its own tool uses; once a thread goes on (None), it is running again."""
        if self._blocked_unpatched or not patched(THREADS_REQUIRE_ACTION):
            self._blocked_unpatched = True
            return
        if event_ids is not None:
            self._state.threads_blocked = event_ids
            await self._idle("requires_action", event_ids=event_ids)
        elif self._state.threads_blocked is not None:
            self._state.threads_blocked = None
            if not self._archiving:  # the archive records the session's end instead
                await self._set_status("running", "session.status_running")

    def _has_new_work(self) -> bool:
        """Queued messages start a turn, unless tool uses still wait for their answers."""
        return bool(self._state.queued) and not self._state.awaiting

    async def _turn(
        self, step: Callable[[], Awaitable[TurnOutcome]], *, announce: bool = True
    ) -> None:
        """One turn, from running to its end; `announce=False` goes on with a turn that an
        earlier run of this session began (and said it was running). A turn whose input
        recorded its running status already (`_announced`) began there."""
        self._in_turn = True
        try:
            await self._turn_steps(step, announce)
        finally:
            self._in_turn = False

    async def _turn_steps(self, step: Callable[[], Awaitable[TurnOutcome]], announce: bool) -> None:
        if self._announced:
            self._announced = False
        elif self._still_running:
            # (issue 18) Still running for the coordinator's threads: a reply goes on (from
            # idle, if the threads were all waiting for the client).
            self._still_running = False
            self._loop.begin_turn()
            if self._state.threads_blocked is not None:
                self._state.threads_blocked = None
                await self._set_status("running", "session.status_running")
        else:
            self._loop.begin_turn()
            if announce:
                await self._set_status("running", "session.status_running")
        outcome = await self._outcome.run(step)
        if outcome.end != TurnEnd.REQUIRES_ACTION:
            self._state.turns += 1
        if self._archiving and outcome.end == TurnEnd.INTERRUPTED:
            # (issue 18) Archived while idle for its threads' tool uses: the archive ends it.
            await self._loop.adopt_held()
            return
        if outcome.end in (TurnEnd.END_TURN, TurnEnd.INTERRUPTED) and self._threads.running():
            # (issue 18) The session aggregates its threads: running while any runs (an
            # interrupted one until it has stopped).
            if outcome.end == TurnEnd.INTERRUPTED:
                await self._loop.adopt_held()
            self._still_running = True
            self._show()
            return
        if outcome.end == TurnEnd.TERMINATED:
            await self._emit("session.error", {"error": outcome.error})
            await self._set_status("terminated", "session.status_terminated")
            self._finished = True
        elif outcome.end == TurnEnd.RETRIES_EXHAUSTED:
            await self._emit("session.error", {"error": outcome.error})
            await self._idle("retries_exhausted")
        elif outcome.end == TurnEnd.REQUIRES_ACTION:
            await self._idle("requires_action", event_ids=outcome.event_ids)
        elif outcome.end == TurnEnd.REFUSAL:
            await self._idle("refusal", stop_details=outcome.stop_details)
        elif outcome.idle_recorded:
            # The model step recorded the idle status with its answer (patch
            # `IDLE_WITH_ANSWER`); inputs an interrupt held since go into the transcript.
            await self._loop.adopt_held()
            self._state.last_stop_reason = "end_turn"
            self._state.status = "idle"
            workflow.upsert_search_attributes([SESSION_STATUS.value_set("idle")])
            self._show()
        else:
            if outcome.end == TurnEnd.INTERRUPTED:
                await self._loop.adopt_held()
            await self._idle("end_turn")

    async def _break(self, error: SessionBroken) -> CarriedState:
        """PostgreSQL refused, for good, a write the session needs: record `session.error`
        (terminal) and terminate, rather than retry for ever or carry on as if it had happened.
        If even that cannot be recorded, the workflow fails with the reason (see the Web UI)."""
        self._loop.interrupt()
        # Nothing waits any more: a terminated session takes nothing up.
        self._state.queued, self._state.held_input_ids = [], []
        body = {
            "type": "unknown_error",
            "message": error.message,
            "retry_status": {"type": "terminal"},
        }
        try:
            await self._set_status(
                "terminated",
                "session.status_terminated",
                leading=[("session.error", {"error": body})],
            )
        except SessionBroken as again:
            raise ApplicationError(
                f"session {self._params.session_id} cannot record anything in PostgreSQL and "
                f"stopped: {again.message}",
                type=again.type,
                non_retryable=True,
            ) from again
        self._finished = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    async def _idle(
        self, stop_reason: str, *, stop_details: dict[str, Any] | None = None, **extra: Any
    ) -> None:
        """`stop_details` (a refusal's) sits beside `stop_reason`, as in the API's idle event."""
        self._state.last_stop_reason = stop_reason
        payload: dict[str, Any] = {"stop_reason": {"type": stop_reason, **extra}}
        if stop_details:
            payload["stop_details"] = stop_details
        await self._set_status("idle", "session.status_idle", payload)

    # ---- inputs ------------------------------------------------------------------------------

    @workflow.update
    async def send_events(self, params: SendEventsInput) -> list[EventEcho]:
        answers = {r.tool_use_id or r.custom_tool_use_id or "" for r in params.events} - {""}
        self._answering |= answers
        defined = [ref for ref in params.events if ref.type == "user.define_outcome"]
        for ref in defined:  # before the first await: a concurrent send is checked against it
            self._outcome.define(ref)
        try:
            if self._starts_turn(params) and patched(PROMOTE_STARTS_TURN):
                echoes = await self._promote_starting_turn(params)
            else:
                echoes = await self._promote(params)
        except BaseException:
            for ref in defined:
                self._outcome.undefine(ref)
            raise
        finally:
            self._answering -= answers
        for ref in params.events:
            if ref.type == "user.interrupt":
                await self._interrupt_threads(ref.session_thread_id)
                if ref.session_thread_id in (None, primary_thread_id(self._params.session_id)):
                    self._interrupt()
            elif ref.type in ("user.message", "user.define_outcome"):
                self._threads.hold_replies = False
                self._state.queued.append(ref)
            else:
                pending = self._pending(ref.tool_use_id or ref.custom_tool_use_id)
                if pending is None and self._state.threads:
                    # (issue 18) A subagent thread's tool use, cross-posted: route the answer.
                    await self._threads.route_answer(
                        ref.id, ref.tool_use_id or ref.custom_tool_use_id, ref.result
                    )
                # None: an interrupt abandoned the tool use while this answer was being recorded.
                if pending is not None and pending.answer_event_id is None:
                    pending.answer_event_id = ref.id
                    pending.result = ref.result
        self._show()
        return echoes

    async def _promote(self, params: SendEventsInput) -> list[EventEcho]:
        async with self._record_lock:
            return await workflow.execute_local_activity(
                Activity.PROMOTE_INPUTS,
                PromoteInputsInput(
                    session_id=self._params.session_id,
                    event_ids=[ref.id for ref in params.events],
                    processed_at=workflow.now(),
                ),
                start_to_close_timeout=RECORD_TIMEOUT,
                retry_policy=RECORD_RETRY,
                result_type=list[EventEcho],
            )

    def _starts_turn(self, params: SendEventsInput) -> bool:
        """Whether these inputs start a turn as soon as they are recorded: messages only, into a
        session that waits for work with nothing else pending."""
        return (
            self._at_rest
            and not self._announced
            and self._state.status == "idle"
            and not self._state.queued
            and not self._state.awaiting
            and not self._abandon_awaiting
            and self._state.threads_blocked is None
            and not (self._finished or self._archiving or self._broken is not None)
            and all(ref.type == "user.message" for ref in params.events)
        )

    async def _promote_starting_turn(self, params: SendEventsInput) -> list[EventEcho]:
        """Record the inputs and the turn's running status in one write (patch
        `PROMOTE_STARTS_TURN`): the turn starts one local activity sooner. The status changes
        here as `_set_status` changes it; the main loop then goes on with the turn."""
        self._loop.begin_turn()
        self._state.status = "running"
        workflow.upsert_search_attributes([SESSION_STATUS.value_set("running")])
        running = NewEvent(
            id=new_id("sevt", workflow.uuid4()),
            type="session.status_running",
            processed_at=workflow.now(),
        )
        try:
            async with self._record_lock:
                echoes: list[EventEcho] = await workflow.execute_local_activity(
                    Activity.PROMOTE_INPUTS,
                    PromoteInputsInput(
                        session_id=self._params.session_id,
                        event_ids=[ref.id for ref in params.events],
                        processed_at=workflow.now(),
                        then=[running],
                        status="running",
                        turns=self._state.turns,
                    ),
                    start_to_close_timeout=RECORD_TIMEOUT,
                    retry_policy=RECORD_RETRY,
                    result_type=list[EventEcho],
                )
        except (ActivityError, ApplicationError):
            # Refused (PostgreSQL refused a write for good, or the inputs are no longer staged):
            # nothing was written (one transaction), the session is idle as it was. Record the
            # inputs alone, as before this patch; the turn then records its status the usual
            # way, and a refusal of that ends the session with an error, as it always did.
            self._state.status = "idle"
            workflow.upsert_search_attributes([SESSION_STATUS.value_set("idle")])
            return await self._promote(params)
        except BaseException:
            self._state.status = "idle"
            workflow.upsert_search_attributes([SESSION_STATUS.value_set("idle")])
            raise
        # Set with the inputs queued (by the caller, before it yields): the main loop wakes to
        # a turn that has its inputs and its status.
        self._announced = True
        return echoes

    @send_events.validator
    def _validate_send_events(self, params: SendEventsInput) -> None:
        if (
            self._finished
            or self._archiving
            or self._broken is not None
            or self._state.status == "terminated"
        ):
            raise ValueError(f"session {self._params.session_id} is terminated; it takes no events")
        self._check_waiting(sum(1 for ref in params.events if ref.type == "user.message"))
        self._outcome.validate(params.events)
        seen: set[str] = set()
        answered: set[str] = set()
        for ref in params.events:
            if ref.type not in INPUT_EVENT_TYPES:
                raise ValueError(f"unknown input event type {ref.type!r}")
            if ref.type in NOT_YET_SUPPORTED:
                raise ValueError(NOT_YET_SUPPORTED[ref.type])
            thread = ref.session_thread_id
            primary = primary_thread_id(self._params.session_id)
            if thread not in (None, primary) and self._threads.find(thread or "") is None:
                raise ValueError(f"session {self._params.session_id} has no thread {thread!r}")
            if ref.id in seen:
                raise ValueError(f"event id {ref.id} appears twice")
            seen.add(ref.id)
            if ref.type in ("user.tool_confirmation", "user.custom_tool_result") and (
                self._abandon_awaiting
            ):
                raise ValueError("the awaited tool uses were interrupted; they take no answers")
            if ref.type == "user.tool_confirmation":
                self._check_answer(ref.tool_use_id, "builtin", answered)
            elif ref.type == "user.custom_tool_result":
                self._check_answer(ref.custom_tool_use_id, "custom", answered)

    def _check_waiting(self, messages: int) -> None:
        """Messages wait (as ids the workflow carries, through continue-as-new too) until a
        model step takes them up: at most `max_waiting_inputs` of them."""
        waiting = len(self._state.queued)
        bound = self._params.options.max_waiting_inputs
        if messages and waiting + messages > bound:
            raise ValueError(
                f"session {self._params.session_id} already has {waiting} messages waiting to be "
                f"taken up and at most {bound} may wait; send these once the session has taken "
                "them up (it is idle or answering again), or interrupt it"
            )

    def _check_answer(self, event_id: str | None, kind: str, answered: set[str]) -> None:
        """An answer must name a tool use that waits for exactly this kind of answer, once."""
        what = "a confirmation" if kind == "builtin" else "a custom tool result"
        pending = self._pending(event_id)
        routed = self._threads.find_awaited(event_id) if pending is None else None
        if routed is not None:
            # (issue 18) A subagent thread's tool use, cross-posted to this thread.
            if routed[1].kind != kind:
                raise ValueError(f"no tool use {event_id!r} is awaiting {what} in this session")
            if routed[1].answered or event_id in answered | self._answering:
                raise ValueError(f"tool use {event_id!r} has already been answered")
            answered.add(event_id or "")
            return
        if pending is None or pending.kind != kind:
            raise ValueError(f"no tool use {event_id!r} is awaiting {what} in this session")
        if pending.answer_event_id is not None or event_id in answered | self._answering:
            raise ValueError(f"tool use {event_id!r} has already been answered")
        answered.add(event_id or "")

    def _pending(self, event_id: str | None) -> PendingToolUse | None:
        return next((p for p in self._state.awaiting if p.event_id == event_id), None)

    def _interrupt(self) -> None:
        """Jump the queue: stop the running step; messages queued so far wait for the next turn."""
        blocked_in_turn = self._in_turn and self._state.threads_blocked is not None
        if self._state.status in ("running", "rescheduling") or blocked_in_turn:
            self._state.held_input_ids.extend(ref.id for ref in self._state.queued)
            self._state.queued.clear()
            self._loop.interrupt()
            self._outcome.interrupt()
        elif self._state.awaiting:
            self._abandon_awaiting = True

    def _answers_end_turns(self, allowed: bool) -> None:
        """Whether a model step may end the turn with its answer: not while an outcome's pass
        is to be graded (the turn goes on with the grader), nor ever in a coordinator's
        session (its threads' replies may go on with it)."""
        self._loop.ends_turns_with_answers = allowed and not self._threads.enabled

    async def _interrupt_threads(self, thread_id: str | None) -> None:
        """(issue 18) Stop the named subagent thread, or (none named) every running one."""
        if not self._state.threads:
            return
        if thread_id == primary_thread_id(self._params.session_id):
            return
        await self._threads.interrupt(thread_id)

    @workflow.signal(name="thread_replied")
    def _thread_replied(self, reply: ThreadReply) -> None:
        """(issue 18) A subagent thread ended a turn: its reply joins the coordinator's inputs
        (the session's turn goes on with it, or a new turn starts)."""
        self._threads.take_reply(reply)

    def _take_inputs(self) -> list[str]:
        """Ids the next model step should see: held inputs first, then queued messages."""
        ids = self._state.held_input_ids + [ref.id for ref in self._state.queued]
        self._state.held_input_ids = []
        self._state.queued = []
        return ids

    # ---- archive -----------------------------------------------------------------------------

    @workflow.update
    async def archive(self) -> None:
        self._archiving = True
        if self._in_turn and self._state.threads_blocked is not None:
            # (issue 18) Idle within a turn, its threads waiting for the client: the turn stops.
            # Only then: any other archive takes the path it took before threads existed, so
            # histories recorded before them replay the same commands.
            self._loop.interrupt()
            await workflow.wait_condition(lambda: not self._in_turn)
        await workflow.wait_condition(lambda: self._state.status not in ("running", "rescheduling"))
        await self._threads.finish_all()
        try:
            await self._set_status("terminated", "session.status_terminated", archive=True)
        except SessionBroken as error:
            self._broken = error  # the main loop records what it can and stops
            raise
        self._finished = True

    @archive.validator
    def _validate_archive(self) -> None:
        busy = (
            self._state.queued
            or self._answering
            or self._abandon_awaiting
            or self._loop.awaiting_all_answered()
        )
        if self._state.status in ("running", "rescheduling") or busy:
            raise ValueError(
                f"session {self._params.session_id} is running; interrupt it or wait until it "
                "is idle before archiving"
            )
        if self._finished or self._archiving or self._broken is not None:
            raise ValueError(f"session {self._params.session_id} is already terminated")

    @workflow.query
    def state(self) -> CarriedState:
        return self._state

    # ---- recording ---------------------------------------------------------------------------

    async def _emit(
        self,
        event_type: str,
        payload: dict[str, Any] | None = None,
        *,
        status: SessionStatus | None = None,
        archive: bool = False,
        leading: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        """Record events (`leading` ones first, then this one) and the status, in one write."""
        events = [
            NewEvent(
                id=new_id("sevt", workflow.uuid4()),
                type=kind,
                processed_at=workflow.now(),
                payload=body or {},
            )
            for kind, body in [*(leading or []), (event_type, payload)]
        ]
        async with self._record_lock:
            await record(
                Activity.RECORD_EVENTS,
                RecordEventsInput(
                    session_id=self._params.session_id,
                    events=events,
                    status=status,
                    archive=archive,
                    turns=self._state.turns if status else None,
                ),
                summary=event_type,
            )

    async def _set_status(
        self,
        status: SessionStatus,
        event_type: str,
        payload: dict[str, Any] | None = None,
        *,
        archive: bool = False,
        leading: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        """Every status change goes through here: the workflow's state, the search attribute,
        the row and the status event agree."""
        self._state.status = status
        workflow.upsert_search_attributes([SESSION_STATUS.value_set(status)])
        await self._emit(event_type, payload, status=status, archive=archive, leading=leading)
        self._show()

    def _show(self) -> None:
        """The live panel of the Web UI: status, counters, what waits."""
        state = self._state
        workflow.set_current_details(
            "\n".join(
                [
                    f"**status:** {state.status}",
                    f"**agent:** {self._params.agent_id} v{self._params.agent_version}",
                    f"**turns:** {state.turns} · **model requests:** {state.model_requests}",
                    f"**queued inputs:** {len(state.queued) + len(state.held_input_ids)}",
                    f"**awaiting answers:** {[p.event_id for p in state.awaiting] or '-'}",
                    f"**last stop reason:** {state.last_stop_reason or '-'}",
                    *(
                        [
                            f"**threads:** {len(state.threads)} · running: {len(self._threads.running())}"
                        ]
                        if state.threads
                        else []
                    ),
                    *filter(None, [self._outcome.describe()]),
                ]
            )
        )
