"""`ThreadWorkflow`: one subagent thread of a coordinator's session (issue 18), a child workflow
of the session (id = the thread's `sth_` id), visible on its own in the Web UI.

It hosts the same agent loop as a session's primary thread, with its agent's own model, prompt
and tools, working in the session's workspace. Messages from the coordinator (its task, then
follow-ups) arrive by the `deliver` signal as ids of events on the thread's own log; each turn
is announced as `session.thread_status_running` / `_idle` on the thread's log and cross-posted
to the primary thread, and its answer goes back to the coordinator as
`agent.thread_message_received` (recorded once, with an id this workflow made) and the
`thread_replied` signal. The thread persists between turns (a follow-up goes on with its
earlier turns), keeps its history bounded (continue-as-new while idle or between model steps)
and ends when its session is archived (`finish`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from reverie.activities.delegation import (
        CROSS_POST_TOOL_USES,
        RECORD_THREAD_STATUS,
        REPORT_THREAD_REPLY,
    )
    from reverie.models.common import derived_id, new_id
    from reverie.models.sessions import SessionStatus
    from reverie.models.thread_io import ThreadWorkflowInput
    from reverie.models.threads import (
        AwaitedUse,
        CrossPostInput,
        RoutedAnswer,
        ThreadReply,
        ThreadReplyInput,
        ThreadStatusInput,
    )
    from reverie.models.workflow_io import (
        Activity,
        InputRef,
        NewEvent,
        RecordEventsInput,
        ThreadState,
    )
    from reverie.workflows.agent_loop import AgentLoop, TurnEnd, TurnOutcome
    from reverie.workflows.recording import SessionBroken, record

# The session workflow's signal that takes a thread's reply.
THREAD_REPLIED = "thread_replied"
MESSAGE_TYPE = "agent.thread_message_received"


@workflow.defn
class ThreadWorkflow:
    @workflow.init
    def __init__(self, params: ThreadWorkflowInput) -> None:
        self._params = params
        self._ref = params.ref
        self._state = (params.carried or ThreadState()).model_copy(deep=True)
        self._replies = params.replies
        self._finished = False
        # An interrupt while tool uses wait for the client: they get error results.
        self._abandon = False
        self._record_lock = asyncio.Lock()
        # The running status event of the turn under way: its reply is what follows it.
        self._turn_start: str | None = params.turn_start
        self._loop = AgentLoop(
            self._ref,
            params.options,
            self._state,
            self._take_inputs,
            self._set_status,
            self._continue_as_new,
        )

    @workflow.run
    async def run(self, params: ThreadWorkflowInput) -> ThreadState:
        try:
            if self._state.resume_inputs is not None:
                inputs, self._state.resume_inputs = self._state.resume_inputs, None
                await self._turn(lambda: self._loop.continue_turn(inputs), announce=False)
            while True:
                await workflow.wait_condition(
                    lambda: (
                        self._finished
                        or self._abandon
                        or self._loop.awaiting_all_answered()
                        or (bool(self._state.queued) and not self._state.awaiting)
                        or workflow.info().is_continue_as_new_suggested()
                    )
                )
                if self._finished:
                    await self._set_status("terminated", "session.thread_status_terminated")
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return self._state
                if self._abandon:
                    self._abandon = False
                    await self._loop.abandon_awaiting()
                    await self._loop.adopt_held()
                    await self._end_turn(TurnOutcome(TurnEnd.INTERRUPTED))
                elif self._loop.awaiting_all_answered():
                    await self._turn(self._loop.resume_turn)
                elif self._state.queued and not self._state.awaiting:
                    await self._turn(self._loop.start_turn)
                else:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    if not (self._state.queued or self._finished):
                        self._continue_as_new()
        except SessionBroken:
            # PostgreSQL refused a write for good: the thread ends; the coordinator hears of it.
            self._state.status = "terminated"
            await self._signal_reply(new_id("sevt", workflow.uuid4()), "terminated", sent=False)
            raise

    async def _turn(self, step: Any, *, announce: bool = True) -> None:
        self._loop.begin_turn()
        if announce:
            await self._set_status("running", "session.thread_status_running")
        outcome: TurnOutcome = await step()
        if outcome.end == TurnEnd.REQUIRES_ACTION:
            await self._requires_action(outcome.event_ids)
            return
        await self._end_turn(outcome)

    async def _requires_action(self, event_ids: list[str]) -> None:
        """Tool uses wait for the client: cross-posted to the primary thread (under ids made
        from theirs), the thread idles with `requires_action`, and the session learns which
        answers to route here. The turn goes on once every one is answered."""
        cross = {i: derived_id("sevt", self._ref.log_id, "cross", i) for i in event_ids}
        await record(
            CROSS_POST_TOOL_USES,  # type: ignore[arg-type]
            CrossPostInput(session_id=self._ref.session_id, thread_id=self._ref.log_id, uses=cross),
            summary="cross-post tool uses",
        )
        stop = {"type": "requires_action", "event_ids": event_ids}
        cross_stop = {"type": "requires_action", "event_ids": [cross[i] for i in event_ids]}
        await self._set_status(
            "idle",
            "session.thread_status_idle",
            {"stop_reason": stop},
            cross_payload={"stop_reason": cross_stop},
        )
        kinds = {p.event_id: p.kind for p in self._state.awaiting}
        awaiting = [AwaitedUse(cross_id=cross[i], event_id=i, kind=kinds[i]) for i in event_ids]
        await self._signal(
            ThreadReply(
                thread_id=self._ref.log_id,
                event_id="",
                turn=self._replies,
                status="running",
                awaiting=awaiting,
            )
        )

    async def _end_turn(self, outcome: TurnOutcome) -> None:
        """The turn is over: its status, then its reply to the coordinator (once)."""
        self._state.turns += 1
        error = outcome.error
        if outcome.end == TurnEnd.TERMINATED:
            await self._set_status(
                "terminated",
                "session.thread_status_terminated",
                leading=[("session.error", {"error": error})],
            )
        elif outcome.end == TurnEnd.RETRIES_EXHAUSTED:
            await self._set_status(
                "idle",
                "session.thread_status_idle",
                {"stop_reason": {"type": "retries_exhausted"}},
                leading=[("session.error", {"error": error})],
            )
        else:
            if outcome.end == TurnEnd.INTERRUPTED:
                await self._loop.adopt_held()
            stop = "refusal" if outcome.end == TurnEnd.REFUSAL else "end_turn"
            payload: dict[str, Any] = {"stop_reason": {"type": stop}}
            if outcome.stop_details:
                payload["stop_details"] = outcome.stop_details
            await self._set_status("idle", "session.thread_status_idle", payload)
        reply_id = new_id("sevt", workflow.uuid4())
        await record(
            REPORT_THREAD_REPLY,  # type: ignore[arg-type]
            ThreadReplyInput(
                session_id=self._ref.session_id,
                thread_id=self._ref.log_id,
                agent_name=self._ref.agent_name or "",
                event_id=reply_id,
                since_event_id=self._turn_start,
                error=error,
            ),
            summary="reply to the coordinator",
        )
        self._replies += 1
        await self._signal_reply(reply_id, self._state.status)

    async def _signal_reply(self, event_id: str, status: str, *, sent: bool = True) -> None:
        await self._signal(
            ThreadReply(
                thread_id=self._ref.log_id,
                event_id=event_id if sent else "",
                turn=self._replies,
                status=status,  # type: ignore[arg-type]
            )
        )

    async def _signal(self, reply: ThreadReply) -> None:
        """Tell the session (its current run, whichever it is): once, from this history."""
        handle = workflow.get_external_workflow_handle(self._ref.session_id)
        try:
            await handle.signal(THREAD_REPLIED, reply)
        except Exception as error:  # the session ended meanwhile: no one is left to tell
            workflow.logger.warning("thread %s: no session to reply to: %s", self._ref, error)

    def _take_inputs(self) -> list[str]:
        ids = self._state.held_input_ids + [ref.id for ref in self._state.queued]
        self._state.held_input_ids = []
        self._state.queued = []
        return ids

    async def _set_status(
        self,
        status: SessionStatus,
        event_type: str,
        payload: dict[str, Any] | None = None,
        *,
        leading: list[tuple[str, dict[str, Any]]] | None = None,
        cross_payload: dict[str, Any] | None = None,
    ) -> None:
        """The loop's status changes, as the thread's own (`session.status_rescheduled` from
        the loop's model retries becomes `session.thread_status_rescheduled`)."""
        event_type = event_type.replace("session.status_", "session.thread_status_")
        self._state.status = status
        if leading:
            async with self._record_lock:
                await record(
                    Activity.RECORD_EVENTS,
                    RecordEventsInput(
                        session_id=self._ref.log_id,
                        events=[
                            NewEvent(
                                id=new_id("sevt", workflow.uuid4()),
                                type=kind,
                                processed_at=workflow.now(),
                                payload=body,
                            )
                            for kind, body in leading
                        ],
                    ),
                    summary="thread error",
                )
        event_id = new_id("sevt", workflow.uuid4())
        if status == "running":
            self._turn_start = event_id
        async with self._record_lock:
            await record(
                RECORD_THREAD_STATUS,  # type: ignore[arg-type]
                ThreadStatusInput(
                    session_id=self._ref.session_id,
                    thread_id=self._ref.log_id,
                    agent_name=self._ref.agent_name or "",
                    status=status,  # type: ignore[arg-type]
                    event_type=event_type,
                    event_id=event_id,
                    cross_id=new_id("sevt", workflow.uuid4()),
                    payload=payload or {},
                    cross_payload=cross_payload,
                    turns=self._state.turns,
                ),
                summary=event_type,
            )
        self._show()

    def _continue_as_new(self) -> None:
        workflow.continue_as_new(
            self._params.model_copy(
                update={
                    "carried": self._state.model_copy(deep=True),
                    "replies": self._replies,
                    "turn_start": self._turn_start,
                }
            )
        )

    # ---- from the session --------------------------------------------------------------------

    @workflow.signal
    def deliver(self, event_id: str) -> None:
        """A message of the coordinator (recorded on this thread's log): the next turn's input."""
        if not self._finished and all(ref.id != event_id for ref in self._state.queued):
            self._state.queued.append(InputRef(id=event_id, type=MESSAGE_TYPE))

    @workflow.signal
    def answer(self, answer: RoutedAnswer) -> None:
        """The client's answer to one of this thread's waiting tool uses (routed by the
        session, which checked it), as an event on this thread's log."""
        for pending in self._state.awaiting:
            if pending.event_id == answer.tool_use_event_id and pending.answer_event_id is None:
                pending.answer_event_id = answer.answer_event_id
                pending.result = answer.result

    @workflow.signal
    def interrupt(self) -> None:
        """Stop the running step (messages queued so far wait for the next turn), or give the
        tool uses waiting for the client error results."""
        if self._state.status in ("running", "rescheduling"):
            self._state.held_input_ids.extend(ref.id for ref in self._state.queued)
            self._state.queued.clear()
            self._loop.interrupt()
        elif self._state.awaiting and not self._loop.awaiting_all_answered():
            self._abandon = True

    @workflow.signal
    def finish(self) -> None:
        """The session is archived: stop, and take nothing more."""
        self._finished = True
        self._loop.interrupt()

    @workflow.query
    def state(self) -> ThreadState:
        return self._state

    def _show(self) -> None:
        state = self._state
        workflow.set_current_details(
            "\n".join(
                [
                    f"**thread of session:** {self._ref.session_id}",
                    f"**status:** {state.status}",
                    f"**agent:** {self._ref.agent_name} ({self._ref.agent_id} "
                    f"v{self._ref.agent_version})",
                    f"**turns:** {state.turns} · **model requests:** {state.model_requests}",
                ]
            )
        )
