"""Multi-agent orchestration: a coordinator's roster, its threads, and the delegation tools.

A coordinator agent declares `multiagent: {type: "coordinator", agents: [...]}` (the SDK's
`BetaManagedAgentsMultiagentCoordinatorParams`); the stored and answered form pins every entry
(`{type: "agent", id, version}`, `BetaManagedAgentsMultiagentCoordinator`). A session of the
coordinator runs each delegation in a thread (`sth_`): a child workflow with the agent's own
model, prompt and tools on the session's workspace. Nothing here imports another module of ours
but `common`, so `agents` can use it.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from reverie.models.common import StrictModel

# The reference's bounds: 1 to 20 roster entries, at most 25 threads running at once.
MAX_ROSTER = 20
MAX_RUNNING_THREADS = 25
# Threads one session may create in all (each is a row and a workflow): generous, bounded.
MAX_THREADS_PER_SESSION = 500
# A delegated task or follow-up is one event the subagent's every model call re-reads.
MAX_TASK_CHARS = 100_000
# Messages a thread may have waiting (sent since its last reply): a model that floods a thread
# with follow-ups gets an error result instead of growing the thread's next prompt for ever.
MAX_UNREAD_MESSAGES = 20
THREAD_PREFIX = "sth"

# The delegation tools a coordinator's model is offered (generated from its roster).
START_THREAD = "start_thread"
MESSAGE_THREAD = "message_thread"
WAIT_FOR_THREADS = "wait_for_threads"
DELEGATION_TOOLS = (START_THREAD, MESSAGE_THREAD, WAIT_FOR_THREADS)


class RosterAgent(StrictModel):
    """`{type: "agent", id, version?}`: a version pins, none means the latest."""

    type: Literal["agent"] = "agent"
    id: str = Field(min_length=1, max_length=256)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class RosterSelf(StrictModel):
    """`{type: "self"}`: the agent that owns the configuration."""

    type: Literal["self"] = "self"


RosterEntry = Annotated[RosterAgent | RosterSelf, Field(discriminator="type")]


class Coordinator(StrictModel):
    type: Literal["coordinator"]
    agents: list[str | RosterEntry] = Field(min_length=1, max_length=MAX_ROSTER)


def parse_multiagent(raw: dict[str, Any]) -> Coordinator:
    """The request's `multiagent`, in shape (existence and versions are checked with the store).
    Raises `ValueError` (refused) or `NotImplementedError` (not supported yet)."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "multiagent_20261001":
        raise NotImplementedError(
            "multiagent type multiagent_20261001 is not supported yet: use "
            '{"type": "coordinator", "agents": [...]}'
        )
    if kind != "coordinator":
        raise ValueError(f'multiagent.type must be "coordinator", not {kind!r}')
    for entry in raw.get("agents") or []:
        if isinstance(entry, dict) and entry.get("type") not in ("agent", "self"):
            raise NotImplementedError(
                f"multiagent roster entries of type {entry.get('type')!r} are not supported yet"
            )
    coordinator = Coordinator.model_validate(raw)
    selves = sum(isinstance(e, RosterSelf) for e in coordinator.agents)
    if selves > 1:
        raise ValueError('multiagent.agents may hold {"type": "self"} at most once')
    return coordinator


class RosterMember(BaseModel):
    """One resolved roster entry as a session runs it: the name the coordinator's model uses."""

    name: str
    agent_id: str
    agent_version: int


class ThreadRef(BaseModel):
    """Which thread a loop (and each activity it starts) works for. The primary thread's log is
    the session's own; a subagent thread's log is its own row, keyed by `thread_id`."""

    session_id: str
    thread_id: str | None = None
    agent_id: str
    agent_version: int
    environment_id: str = "env_default"
    agent_name: str | None = None

    @property
    def log_id(self) -> str:
        return self.thread_id or self.session_id


ThreadStatus = Literal["running", "idle", "rescheduling", "terminated"]


class AwaitedUse(BaseModel):
    """A subagent's tool use that waits for the client (an `always_ask` confirmation or a custom
    tool's result), cross-posted to the primary thread under `cross_id`. The client answers on
    the session by either id; the answer is routed to the thread."""

    cross_id: str
    event_id: str
    kind: Literal["builtin", "custom"]
    answered: bool = False


class ThreadEntry(BaseModel):
    """A subagent thread as its session's workflow keeps it: ids and a status."""

    thread_id: str
    agent_name: str
    agent_id: str
    agent_version: int
    status: ThreadStatus = "running"
    # Turns the thread finished (each one's reply reached the coordinator).
    replies: int = 0
    # Messages sent to it since its last reply (its task counts).
    unread: int = 0
    # Its tool uses waiting for the client, cross-posted to the primary thread.
    awaiting: list[AwaitedUse] = []


class ThreadReply(BaseModel):
    """Signalled by a thread to its session when a turn ends: the recorded reply's event id."""

    thread_id: str
    event_id: str
    turn: int
    status: ThreadStatus = "idle"
    # Set (and no reply) when the thread's turn waits for the client's answers.
    awaiting: list[AwaitedUse] = []


class DelegationInput(BaseModel):
    """One delegation tool use of the coordinator, to check and record (activities/delegation)."""

    session_id: str
    primary_thread_id: str
    tool_use_event_id: str
    result_event_id: str
    # Workflow-made: the thread a `start_thread` creates and the message it sends.
    new_thread_id: str
    message_event_id: str
    sent_event_id: str
    created_event_id: str
    environment_id: str
    roster: list[RosterMember]
    # The session's threads, for a follow-up or a wait (a start needs only the counts): what
    # one delegation carries into history stays small.
    threads: list[ThreadEntry]
    thread_count: int = 0
    running: int
    max_running: int = MAX_RUNNING_THREADS


class Delegation(BaseModel):
    """What a delegation tool use asks for, once checked (`error`: its recorded error result)."""

    action: Literal["start", "message", "wait", "error"]
    thread_id: str | None = None
    agent_name: str | None = None
    agent_id: str | None = None
    agent_version: int | None = None
    message_event_id: str | None = None
    wait_for: list[str] = []
    error: str | None = None


class WaitResultInput(BaseModel):
    session_id: str
    tool_use_event_id: str
    result_event_id: str
    replied: list[str]
    still_running: list[str]
    interrupted: bool = False
    # Named, but not running when the wait began: nothing of theirs follows.
    not_running: list[str] = []
    # Ended meanwhile without a reply (terminated, e.g. by hand outside Reverie).
    terminated: list[str] = []


class ThreadReplyInput(BaseModel):
    """Record a thread's reply to the coordinator on the primary thread (once: id made by the
    thread's workflow), from the thread's last answer since `since_event_id`."""

    session_id: str
    thread_id: str
    agent_name: str
    event_id: str
    since_event_id: str | None = None
    error: dict[str, Any] | None = None


class ThreadStatusInput(BaseModel):
    """A thread's status change, recorded on its own log and cross-posted to the primary."""

    session_id: str
    thread_id: str
    agent_name: str
    status: ThreadStatus
    event_type: str
    event_id: str
    cross_id: str
    payload: dict[str, Any] = {}
    # The primary thread's copy, when it differs (ids of cross-posted events).
    cross_payload: dict[str, Any] | None = None
    turns: int | None = None


class CrossPostInput(BaseModel):
    """A thread's tool uses that wait for the client, copied to the primary thread."""

    session_id: str
    thread_id: str
    # the thread's tool use event id -> the primary thread's copy
    uses: dict[str, str]


class RouteAnswerInput(BaseModel):
    """The client's answer (recorded on the primary thread) copied to the thread it is for,
    naming the thread's own tool use."""

    session_id: str
    thread_id: str
    answer_event_id: str
    copy_event_id: str
    tool_use_event_id: str


class RoutedAnswer(BaseModel):
    """Signalled to a thread: its tool use's answer, on its own log."""

    tool_use_event_id: str
    answer_event_id: str
    result: Literal["allow", "deny"] | None = None


class SessionThread(BaseModel):
    """`BetaManagedAgentsSessionThread`."""

    type: Literal["session_thread"] = "session_thread"
    id: str
    session_id: str
    agent: dict[str, Any]
    parent_thread_id: str | None = None
    status: ThreadStatus
    stats: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    workflow_run_id: str | None = None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


def name_key(name: str) -> str:
    """How agent names compare (the roster's distinctness, the model's choice): Unicode
    compatibility-normalised and case-folded, so `Café`, `CAFÉ` and a decomposed `café` are one."""
    return unicodedata.normalize("NFKC", name).casefold().strip()


def roster_member(roster: list[RosterMember], name: object) -> RosterMember | None:
    """The member the coordinator's model named: by its exact name, else by `name_key`."""
    if not isinstance(name, str):
        return None
    exact = next((m for m in roster if m.name == name), None)
    if exact is not None:
        return exact
    folded = [m for m in roster if name_key(m.name) == name_key(name)]
    return folded[0] if len(folded) == 1 else None


def primary_thread_id(session_id: str) -> str:
    """The primary thread's id: derived from the session's, so nothing needs storing."""
    return f"{THREAD_PREFIX}_{session_id.split('_', 1)[-1]}"


def delegation_tools(roster: list[RosterMember]) -> list[dict[str, Any]]:
    """The coordinator's delegation tools, generated from its roster."""
    names = [member.name for member in roster]
    listing = "; ".join(names)
    return [
        {
            "name": START_THREAD,
            "description": (
                "Start a subagent in a thread of its own and give it a task. The subagent works "
                "in parallel with you, on the same files, and its reply reaches you when its "
                f"turn ends (use {WAIT_FOR_THREADS} to wait for it). Start several at once by "
                f"calling this tool several times in one answer. Agents: {listing}. At most "
                f"{MAX_RUNNING_THREADS} threads run at once."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "enum": names, "description": "Which agent."},
                    "task": {"type": "string", "description": "What the subagent should do."},
                },
                "required": ["agent", "task"],
            },
        },
        {
            "name": MESSAGE_THREAD,
            "description": (
                "Send a follow-up to a thread you started: it goes on with its earlier turns."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "thread_id": {"type": "string", "description": "The thread's sth_ id."},
                    "message": {"type": "string", "description": "The follow-up."},
                },
                "required": ["thread_id", "message"],
            },
        },
        {
            "name": WAIT_FOR_THREADS,
            "description": (
                "Wait until the named threads (all running ones if none are named) end their "
                "turn; their replies follow this tool's result."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "thread_ids": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    ]
