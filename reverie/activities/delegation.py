"""Delegation activities (issue 18): a coordinator's delegation tool uses are checked and
recorded here (the thread's row, its task, the announcements and the tool's result, in one
transaction), a thread's status changes are recorded on its own log and cross-posted to the
primary thread, and a thread's reply reaches the primary thread as
`agent.thread_message_received`.

Everything the model wrote is untrusted: the agent it names must be on the roster, a thread id
must be one of this session's threads (never another session's), a task has a bounded size.
Every id is made by the workflow, so a retried activity writes nothing twice and answers the
same (a decision is kept in `thread_delegations`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from reverie.activities.events import refusals_are_final
from reverie.models.errors import InvalidRequestError
from reverie.models.threads import (
    MAX_TASK_CHARS,
    MAX_THREADS_PER_SESSION,
    MAX_UNREAD_MESSAGES,
    MESSAGE_THREAD,
    START_THREAD,
    WAIT_FOR_THREADS,
    CrossPostInput,
    Delegation,
    DelegationInput,
    RosterMember,
    RouteAnswerInput,
    ThreadReplyInput,
    ThreadStatusInput,
    WaitResultInput,
    delegation_tools,
    roster_member,
)
from reverie.store import events, sessions
from reverie.store import threads as thread_store
from reverie.store.pool import Pool

DELEGATE = "delegate"
RECORD_WAIT_RESULT = "record_wait_result"
CROSS_POST_TOOL_USES = "cross_post_tool_uses"
ROUTE_ANSWER = "route_answer"
RECORD_THREAD_STATUS = "record_thread_status"
REPORT_THREAD_REPLY = "report_thread_reply"
# What of a reply the coordinator sees at most: the rest stays in the thread's own log.
MAX_REPLY_CHARS = 50_000


def _text(value: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": value}]


class _Refused(Exception):
    """A delegation the coordinator's model asked for that cannot be done: its error result."""


def _room_to_run(params: DelegationInput, then: str) -> None:
    """One more thread may start running (the limit on threads running at once)."""
    if params.running >= params.max_running:
        raise _Refused(
            f"{params.running} threads are running already and at most "
            f"{params.max_running} may run at once: {then}"
        )


def _task(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Refused(f"{field} must be a non-empty string")
    if len(value) > MAX_TASK_CHARS:
        raise _Refused(f"{field} has {len(value):,} characters; at most {MAX_TASK_CHARS:,} allowed")
    return value


class DelegationActivities:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @activity.defn(name=DELEGATE)
    async def delegate(self, params: DelegationInput) -> Delegation:
        """Check one delegation tool use and record what it does (idempotent: a retry decides
        the same from the same input and writes nothing twice).

        Two transactions, never one that locks the session's row and then a thread's (a
        thread's model step locks its own row, then adds its usage to the session's): first
        the thread's side (its row, the message on its log), then the session's (the
        announcements, the tool's result and the decision, which marks it done)."""
        with refusals_are_final(f"record delegation {params.tool_use_event_id}"):
            done = await self._pool.fetchval(
                "SELECT decision FROM thread_delegations WHERE result_event_id = $1",
                params.result_event_id,
            )
            if done is not None:
                return Delegation.model_validate(done)
            found = await events.get_many(self._pool, [params.tool_use_event_id])
            use = found[0].payload if found else {}
            try:
                decision, content = self._decide(params, use)
            except _Refused as refused:
                decision, content = Delegation(action="error", error=str(refused)), None
            now = datetime.now(UTC)
            if decision.action in ("start", "message"):
                await self._to_thread(params, decision, content or [], now)
            async with self._pool.acquire() as conn, conn.transaction():
                await events.append(
                    conn, params.session_id, self._announced(params, decision, content, now)
                )
                await conn.execute(
                    "INSERT INTO thread_delegations (result_event_id, session_id, decision)"
                    " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    params.result_event_id,
                    params.session_id,
                    decision.model_dump(mode="json"),
                )
            return decision

    def _decide(
        self, params: DelegationInput, use: dict[str, Any]
    ) -> tuple[Delegation, list[dict[str, Any]] | None]:
        name = use.get("name")
        tool_input = use.get("input")
        if not isinstance(tool_input, dict):
            raise _Refused("the tool's input must be an object")
        if name == START_THREAD:
            return self._start(params, tool_input)
        if name == MESSAGE_THREAD:
            return self._message(params, tool_input)
        if name == WAIT_FOR_THREADS:
            return self._wait(params, tool_input), None
        raise _Refused(f"unknown delegation tool {name!r}")

    def _start(
        self, params: DelegationInput, tool_input: dict[str, Any]
    ) -> tuple[Delegation, list[dict[str, Any]]]:
        agent_name = tool_input.get("agent")
        member = roster_member(params.roster, agent_name)
        if member is None:
            names = ", ".join(repr(m.name) for m in params.roster)
            shown = agent_name if isinstance(agent_name, str) and len(agent_name) < 200 else "?"
            raise _Refused(f"no agent {shown!r} on the roster; choose one of {names}")
        task = _task(tool_input.get("task"), "task")
        _room_to_run(params, f"wait for some to finish ({WAIT_FOR_THREADS}), then start more")
        if params.thread_count >= MAX_THREADS_PER_SESSION:
            raise _Refused(
                f"this session has {params.thread_count} threads, the most it may have; "
                f"send follow-ups to existing threads ({MESSAGE_THREAD}) instead"
            )
        decision = Delegation(
            action="start",
            thread_id=params.new_thread_id,
            agent_name=member.name,
            agent_id=member.agent_id,
            agent_version=member.agent_version,
            message_event_id=params.message_event_id,
        )
        return decision, _text(task)

    def _message(
        self, params: DelegationInput, tool_input: dict[str, Any]
    ) -> tuple[Delegation, list[dict[str, Any]]]:
        thread_id = tool_input.get("thread_id")
        entry = next((t for t in params.threads if t.thread_id == thread_id), None)
        if entry is None:
            # Only this session's threads, as the workflow knows them: an id of another
            # session's thread (or any other string) is unknown here.
            shown = thread_id if isinstance(thread_id, str) and len(thread_id) < 200 else "?"
            raise _Refused(f"this session has no thread {shown!r}")
        if entry.status == "terminated":
            raise _Refused(f"thread {entry.thread_id} is terminated; it takes no messages")
        message = _task(tool_input.get("message"), "message")
        if entry.unread >= MAX_UNREAD_MESSAGES:
            raise _Refused(
                f"thread {entry.thread_id} has {entry.unread} messages it has not answered yet, "
                f"the most it may have: wait for its reply ({WAIT_FOR_THREADS}) before sending "
                "more"
            )
        if entry.status != "running":
            _room_to_run(params, "wait for some to finish first")
        decision = Delegation(
            action="message",
            thread_id=entry.thread_id,
            agent_name=entry.agent_name,
            message_event_id=params.message_event_id,
        )
        return decision, _text(message)

    async def _to_thread(
        self,
        params: DelegationInput,
        decision: Delegation,
        content: list[dict[str, Any]],
        now: datetime,
    ) -> None:
        """The thread's side: its row (a new thread) and the message on its own log."""
        assert decision.thread_id and decision.message_event_id
        async with self._pool.acquire() as conn, conn.transaction():
            if decision.action == "start":
                await thread_store.create(
                    conn,
                    decision.thread_id,
                    params.session_id,
                    agent_id=decision.agent_id or "",
                    agent_version=decision.agent_version or 1,
                    agent_name=decision.agent_name or "",
                )
            message = {"from_session_thread_id": params.primary_thread_id, "content": content}
            await events.append(
                conn,
                decision.thread_id,
                [(decision.message_event_id, "agent.thread_message_received", message, now)],
            )

    def _announced(
        self,
        params: DelegationInput,
        decision: Delegation,
        content: list[dict[str, Any]] | None,
        now: datetime,
    ) -> list[tuple[str, str, dict[str, Any], datetime]]:
        """The session's side: what the primary thread shows, then the tool's result."""
        rows: list[tuple[str, str, dict[str, Any], datetime]] = []
        if decision.action == "start":
            created = {"session_thread_id": decision.thread_id, "agent_name": decision.agent_name}
            rows.append((params.created_event_id, "session.thread_created", created, now))
        if decision.action in ("start", "message"):
            sent = {
                "to_session_thread_id": decision.thread_id,
                "to_agent_name": decision.agent_name,
                "content": content,
            }
            rows.append((params.sent_event_id, "agent.thread_message_sent", sent, now))
        if decision.action == "start":
            text = (
                f"Started thread {decision.thread_id} running agent {decision.agent_name!r}. "
                f"Its reply reaches you when its turn ends; call {WAIT_FOR_THREADS} to wait "
                "for it."
            )
        elif decision.action == "message":
            text = f"Sent the message to thread {decision.thread_id} ({decision.agent_name})."
        elif decision.action == "error":
            text = decision.error or "refused"
        else:
            return rows  # a wait: its result is recorded once it is over
        result = {
            "tool_use_id": params.tool_use_event_id,
            "content": _text(text),
            "is_error": decision.action == "error",
        }
        rows.append((params.result_event_id, "agent.tool_result", result, now))
        return rows

    def _wait(self, params: DelegationInput, tool_input: dict[str, Any]) -> Delegation:
        named = tool_input.get("thread_ids")
        known = {t.thread_id for t in params.threads}
        if named is None or named == []:
            return Delegation(
                action="wait",
                wait_for=[t.thread_id for t in params.threads if t.status == "running"],
            )
        if not isinstance(named, list) or not all(isinstance(i, str) for i in named):
            raise _Refused("thread_ids must be a list of thread ids")
        unknown = [i for i in named if i not in known]
        if unknown:
            raise _Refused(f"this session has no threads {[i[:100] for i in unknown[:10]]}")
        return Delegation(action="wait", wait_for=list(dict.fromkeys(named)))

    @activity.defn(name=RECORD_WAIT_RESULT)
    async def record_wait_result(self, params: WaitResultInput) -> None:
        if params.interrupted:
            text = "The wait was interrupted."
        elif not (params.replied or params.still_running or params.terminated):
            text = "No thread was running: there is nothing to wait for."
            if params.not_running:
                text = (
                    f"Threads {params.not_running} were not running: there is nothing to wait "
                    "for (a reply of theirs you have not seen yet follows this result)."
                )
        else:
            parts = []
            if params.replied:
                parts.append(f"Threads {params.replied} ended their turn; their replies follow.")
            if params.terminated:
                parts.append(
                    f"Threads {params.terminated} were terminated; no reply of theirs follows."
                )
            if params.still_running:
                parts.append(f"Still running: {params.still_running}.")
            if params.not_running:
                parts.append(f"Not running when the wait began: {params.not_running}.")
            text = " ".join(parts)
        with refusals_are_final(f"record the result of {params.tool_use_event_id}"):
            await events.append(
                self._pool,
                params.session_id,
                [
                    (
                        params.result_event_id,
                        "agent.tool_result",
                        {
                            "tool_use_id": params.tool_use_event_id,
                            "content": _text(text),
                            "is_error": params.interrupted,
                        },
                        datetime.now(UTC),
                    )
                ],
            )

    @activity.defn(name=RECORD_THREAD_STATUS)
    async def record_thread_status(self, params: ThreadStatusInput) -> None:
        """A thread's status: its row and its own log, and a copy on the primary thread."""
        now = datetime.now(UTC)
        body = {
            "session_thread_id": params.thread_id,
            "agent_name": params.agent_name,
            **params.payload,
        }
        cross = {**body, **(params.cross_payload or {})}
        # Two transactions (the thread's, then the session's): none locks the session's row
        # and then a thread's. A retry writes what is missing.
        with refusals_are_final(f"record {params.event_type} of thread {params.thread_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                await events.append(
                    conn, params.thread_id, [(params.event_id, params.event_type, body, now)]
                )
                await sessions.set_status(conn, params.thread_id, params.status, turns=params.turns)
            await events.append(
                self._pool, params.session_id, [(params.cross_id, params.event_type, cross, now)]
            )

    @activity.defn(name=CROSS_POST_TOOL_USES)
    async def cross_post_tool_uses(self, params: CrossPostInput) -> None:
        """A thread's tool uses that wait for the client, on the primary thread's stream (with
        `session_thread_id`), so a client watching the session sees and answers them."""
        with refusals_are_final(f"cross-post tool uses of thread {params.thread_id}"):
            found = await events.get_many(self._pool, list(params.uses))
            now = datetime.now(UTC)
            rows = [
                (
                    params.uses[e.id],
                    e.type,
                    {**e.payload, "session_thread_id": params.thread_id},
                    now,
                )
                for e in found
            ]
            await events.append(self._pool, params.session_id, rows)

    @activity.defn(name=ROUTE_ANSWER)
    async def route_answer(self, params: RouteAnswerInput) -> None:
        """The client's answer, recorded on the primary thread, copied to the thread's log under
        the thread's own tool use id (its transcript pairs the tool use with it)."""
        with refusals_are_final(f"route answer {params.answer_event_id}"):
            found = await events.get_many(self._pool, [params.answer_event_id])
            if not found:
                raise InvalidRequestError(f"no answer event {params.answer_event_id}")
            answer = found[0]
            payload = dict(answer.payload)
            key = "tool_use_id" if answer.type == "user.tool_confirmation" else "custom_tool_use_id"
            payload[key] = params.tool_use_event_id
            await events.append(
                self._pool,
                params.thread_id,
                [(params.copy_event_id, answer.type, payload, datetime.now(UTC))],
            )

    @activity.defn(name=REPORT_THREAD_REPLY)
    async def report_thread_reply(self, params: ThreadReplyInput) -> None:
        """The thread's last answer of its turn, to the primary thread (once: the id is made by
        the thread's workflow)."""
        with refusals_are_final(f"report the reply of thread {params.thread_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                after = 0
                if params.since_event_id:
                    after = await events.position_of(conn, params.thread_id, params.since_event_id)
                    after = after or 0
                text = await conn.fetchval(
                    """SELECT string_agg(b ->> 'text', E'\\n') FROM (
                         SELECT payload FROM events
                         WHERE session_id = $1 AND position > $2 AND type = 'agent.message'
                         ORDER BY position DESC LIMIT 1) m,
                       jsonb_array_elements(m.payload -> 'content') b""",
                    params.thread_id,
                    after,
                )
                if params.error is not None:
                    text = (
                        f"{text}\n\n" if text else ""
                    ) + f"[The thread's turn ended with an error: {params.error.get('message')}]"
                if not text:
                    text = "[The thread ended its turn without a message.]"
                if len(text) > MAX_REPLY_CHARS:
                    text = text[:MAX_REPLY_CHARS] + (
                        f"\n[... cut at {MAX_REPLY_CHARS:,} characters; the whole reply is in "
                        f"thread {params.thread_id}'s events]"
                    )
                await events.append(
                    conn,
                    params.session_id,
                    [
                        (
                            params.event_id,
                            "agent.thread_message_received",
                            {
                                "from_session_thread_id": params.thread_id,
                                "from_agent_name": params.agent_name,
                                "content": _text(text),
                            },
                            datetime.now(UTC),
                        )
                    ],
                )


async def roster_tools(
    agent: Any, get_agent: Callable[[str, int], Awaitable[Any]]
) -> list[dict[str, Any]]:
    """The delegation tools of a coordinator's model, from its pinned roster."""
    roster = []
    for entry in (agent.multiagent or {}).get("agents") or []:
        member = await get_agent(entry["id"], entry["version"])
        roster.append(
            RosterMember(name=member.name, agent_id=member.id, agent_version=member.version)
        )
    return delegation_tools(roster) if roster else []
