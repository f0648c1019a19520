"""The session's side of multi-agent orchestration (issue 18): its coordinator's delegation tool
uses start subagent threads (child `ThreadWorkflow`s), send them follow-ups and wait for them;
their replies come back by signal and join the primary thread's inputs, each exactly once.

The session's state carries the threads (ids and statuses) through continue-as-new. Children
are started with `ABANDON` as their parent-close policy, since a session's run closes at every
continue-as-new: the session talks to its threads by workflow id (signals), never by a run's
handle, and ends them itself when it is archived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import FailureError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from reverie.activities.delegation import (
        DELEGATE,
        RECORD_THREAD_STATUS,
        RECORD_WAIT_RESULT,
        ROUTE_ANSWER,
    )
    from reverie.models.common import new_id
    from reverie.models.thread_io import ThreadWorkflowInput
    from reverie.models.threads import (
        MAX_RUNNING_THREADS,
        START_THREAD,
        THREAD_PREFIX,
        AwaitedUse,
        Delegation,
        DelegationInput,
        RouteAnswerInput,
        RoutedAnswer,
        ThreadEntry,
        ThreadRef,
        ThreadReply,
        ThreadStatusInput,
        WaitResultInput,
        primary_thread_id,
    )
    from reverie.models.workflow_io import (
        CarriedState,
        InputRef,
        SessionWorkflowInput,
        ThreadState,
        ToolUseRef,
    )
    from reverie.workflows.patches import MULTIAGENT, THREAD_ENDED_OUTSIDE, patched
    from reverie.workflows.recording import record
    from reverie.workflows.thread import MESSAGE_TYPE, ThreadWorkflow

# Reply ids a session remembers having taken (a reply is signalled once; this is a safety net).
REPLIES_REMEMBERED = 200


class ThreadHost:
    def __init__(
        self,
        params: SessionWorkflowInput,
        state: CarriedState,
        interrupted: Callable[[], bool],
        on_change: Callable[[], None],
        on_blocked: Callable[[list[str] | None], Awaitable[None]] | None = None,
    ) -> None:
        self._params = params
        self._state = state
        self._interrupted = interrupted
        self._on_change = on_change
        # Told when a wait comes to hang on the client only (`blocked`), and when no more.
        self._on_blocked = on_blocked
        # One delegation is checked and carried out at a time (the running count stays exact
        # when the model starts several threads in one answer); waiting holds no lock.
        self._lock = asyncio.Lock()

    @property
    def hold_replies(self) -> bool:
        """After an interrupt of the whole session, replies of the stopped threads wait for the
        coordinator's next turn instead of starting one (until a user message comes). Kept in
        the carried state, so it outlives continue-as-new."""
        return self._state.hold_thread_replies

    @hold_replies.setter
    def hold_replies(self, hold: bool) -> None:
        self._state.hold_thread_replies = hold

    @property
    def enabled(self) -> bool:
        return bool(self._params.roster)

    def running(self) -> list[ThreadEntry]:
        return [t for t in self._state.threads if t.status in ("running", "rescheduling")]

    def blocked(self) -> list[str] | None:
        """The cross-posted tool uses still unanswered, when every running thread waits for
        the client's answers (nothing runs but them); else None."""
        running = self.running()
        waiting = [[u.cross_id for u in t.awaiting if not u.answered] for t in running]
        if not running or not all(waiting):
            return None
        return [event_id for ids in waiting for event_id in ids]

    def find(self, thread_id: str) -> ThreadEntry | None:
        return next((t for t in self._state.threads if t.thread_id == thread_id), None)

    # ---- the coordinator's delegation tools --------------------------------------------------

    async def delegate(self, use: ToolUseRef) -> str:
        """Carry out one delegation tool use; the id of its recorded result."""
        result_id = new_id("sevt", workflow.uuid4())
        async with self._lock:
            patched(MULTIAGENT)
            decision: Delegation = await record(
                DELEGATE,  # type: ignore[arg-type]
                DelegationInput(
                    session_id=self._params.session_id,
                    primary_thread_id=primary_thread_id(self._params.session_id),
                    tool_use_event_id=use.event_id,
                    result_event_id=result_id,
                    new_thread_id=new_id(THREAD_PREFIX, workflow.uuid4()),
                    message_event_id=new_id("sevt", workflow.uuid4()),
                    sent_event_id=new_id("sevt", workflow.uuid4()),
                    created_event_id=new_id("sevt", workflow.uuid4()),
                    environment_id=self._params.environment_id,
                    roster=self._params.roster,
                    threads=self._state.threads if use.name != START_THREAD else [],
                    thread_count=len(self._state.threads),
                    running=len(self.running()),
                    max_running=MAX_RUNNING_THREADS,
                ),
                summary=f"delegate ({use.name})",
                result_type=Delegation,
            )
            if decision.action == "start":
                await self._start(decision)
            elif decision.action == "message":
                await self._message(decision)
        if decision.action == "wait":
            await self._wait(use, decision.wait_for, result_id)
        self._on_change()
        return result_id

    async def _start(self, decision: Delegation) -> None:
        assert decision.thread_id and decision.message_event_id
        entry = ThreadEntry(
            thread_id=decision.thread_id,
            agent_name=decision.agent_name or "",
            agent_id=decision.agent_id or "",
            agent_version=decision.agent_version or 1,
            unread=1,
        )
        self._state.threads.append(entry)
        await workflow.start_child_workflow(
            ThreadWorkflow.run,
            ThreadWorkflowInput(
                ref=ThreadRef(
                    session_id=self._params.session_id,
                    thread_id=entry.thread_id,
                    agent_id=entry.agent_id,
                    agent_version=entry.agent_version,
                    environment_id=self._params.environment_id,
                    agent_name=entry.agent_name,
                ),
                options=self._params.options,
                carried=ThreadState(
                    queued=[InputRef(id=decision.message_event_id, type=MESSAGE_TYPE)]
                ),
            ),
            id=entry.thread_id,
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary=f"thread {entry.agent_name} of {self._params.session_id}",
        )

    async def _message(self, decision: Delegation) -> None:
        assert decision.thread_id and decision.message_event_id
        entry = self.find(decision.thread_id)
        assert entry is not None
        entry.status = "running"
        entry.unread += 1
        await self._signal(entry, ThreadWorkflow.deliver, decision.message_event_id)

    async def _wait(self, use: ToolUseRef, wait_for: list[str], result_id: str) -> None:
        """Until each named thread ends its turn (or the coordinator is interrupted); the
        replies join the primary thread's inputs, after this tool's result."""

        def still() -> list[str]:
            return [
                t.thread_id
                for t in self._state.threads
                if t.thread_id in wait_for and t.status in ("running", "rescheduling")
            ]

        started = set(still())
        # The wait may come to hang on the client's answers (every running thread waits for
        # them): the session says so (idle, `requires_action`) until a thread goes on.
        shown: list[str] | None = None
        while True:
            await workflow.wait_condition(
                lambda shown=shown: (  # type: ignore[misc]
                    not still()
                    or self._interrupted()
                    or (self._on_blocked is not None and self.blocked() != shown)
                )
            )
            if not still() or self._interrupted() or self._on_blocked is None:
                break
            shown = self.blocked()
            await self._on_blocked(shown)
        if shown is not None and self._on_blocked is not None:
            await self._on_blocked(None)
        running = still()
        ended = [i for i in wait_for if i in started and i not in running]
        gone = [i for i in ended if (entry := self.find(i)) and entry.status == "terminated"]
        await record(
            RECORD_WAIT_RESULT,  # type: ignore[arg-type]
            WaitResultInput(
                session_id=self._params.session_id,
                tool_use_event_id=use.event_id,
                result_event_id=result_id,
                replied=[i for i in ended if i not in gone],
                still_running=running,
                not_running=[i for i in wait_for if i not in started],
                terminated=gone,
                interrupted=bool(running) and self._interrupted(),
            ),
            summary="wait for threads",
        )

    # ---- from the threads --------------------------------------------------------------------

    def take_reply(self, reply: ThreadReply) -> None:
        """A thread ended a turn: its status, and its reply queued for the coordinator."""
        entry = self.find(reply.thread_id)
        if entry is None:
            return
        entry.status = reply.status
        entry.awaiting = reply.awaiting
        if reply.awaiting:
            # Not a reply: the thread's turn waits for the client's answers (cross-posted).
            self._on_change()
            return
        if not reply.event_id or reply.event_id in self._state.replies_taken:
            return
        entry.replies += 1
        entry.unread = 0
        self._state.replies_taken = [*self._state.replies_taken, reply.event_id][
            -REPLIES_REMEMBERED:
        ]
        if self.hold_replies:
            self._state.held_input_ids.append(reply.event_id)
        else:
            self._state.queued.append(InputRef(id=reply.event_id, type=MESSAGE_TYPE))
        self._on_change()

    async def interrupt(self, thread_id: str | None) -> None:
        """`user.interrupt` naming a thread stops that one; without a name, every running one."""
        if thread_id is None:
            self.hold_replies = True
        for entry in self._state.threads:
            if entry.status == "terminated" or (thread_id and entry.thread_id != thread_id):
                continue
            entry.awaiting = []  # the thread gives its waiting tool uses error results
            if thread_id or entry.status in ("running", "rescheduling"):
                await self._signal(entry, ThreadWorkflow.interrupt)

    # ---- answers for the threads' tool uses --------------------------------------------------

    def find_awaited(self, tool_use_id: str | None) -> tuple[ThreadEntry, AwaitedUse] | None:
        """The thread tool use a client's answer names, by the primary thread's copy's id or
        the thread's own."""
        for entry in self._state.threads:
            for use in entry.awaiting:
                if tool_use_id in (use.cross_id, use.event_id):
                    return entry, use
        return None

    async def route_answer(
        self, answer_event_id: str, tool_use_id: str | None, result: Any
    ) -> None:
        """Copy the recorded answer to its thread's log and hand it to the thread."""
        found = self.find_awaited(tool_use_id)
        if found is None or found[1].answered:
            return
        entry, use = found
        use.answered = True
        copy_id = new_id("sevt", workflow.uuid4())
        await record(
            ROUTE_ANSWER,  # type: ignore[arg-type]
            RouteAnswerInput(
                session_id=self._params.session_id,
                thread_id=entry.thread_id,
                answer_event_id=answer_event_id,
                copy_event_id=copy_id,
                tool_use_event_id=use.event_id,
            ),
            summary="route an answer to its thread",
        )
        if all(u.answered for u in entry.awaiting):
            entry.awaiting = []
        await self._signal(
            entry,
            ThreadWorkflow.answer,
            RoutedAnswer(tool_use_event_id=use.event_id, answer_event_id=copy_id, result=result),
        )

    async def _signal(self, entry: ThreadEntry, signal: Any, *args: Any) -> None:
        """Signal a thread's workflow. One that ended outside Reverie (terminated in the Web UI
        or with the CLI) cannot take it: the thread counts as terminated from then on, and the
        session goes on (a failed signal would otherwise fail the session's workflow)."""
        handle = workflow.get_external_workflow_handle(entry.thread_id)
        try:
            await handle.signal(signal, *args)
        except FailureError as error:
            workflow.logger.warning("thread %s ended outside Reverie: %s", entry.thread_id, error)
            entry.status = "terminated"
            entry.awaiting = []
            if patched(THREAD_ENDED_OUTSIDE):
                await record(
                    RECORD_THREAD_STATUS,  # type: ignore[arg-type]
                    ThreadStatusInput(
                        session_id=self._params.session_id,
                        thread_id=entry.thread_id,
                        agent_name=entry.agent_name,
                        status="terminated",
                        event_type="session.thread_status_terminated",
                        event_id=new_id("sevt", workflow.uuid4()),
                        cross_id=new_id("sevt", workflow.uuid4()),
                    ),
                    summary="thread ended outside Reverie",
                )

    async def finish_all(self) -> None:
        """The session is archived: every thread ends (records its terminated status)."""
        for entry in self._state.threads:
            if entry.status == "terminated":
                continue
            handle = workflow.get_external_workflow_handle(entry.thread_id)
            try:
                await handle.signal(ThreadWorkflow.finish)
            except Exception as error:  # ended already (its history is gone): nothing to stop
                workflow.logger.warning("thread %s: %s", entry.thread_id, error)
            entry.status = "terminated"
