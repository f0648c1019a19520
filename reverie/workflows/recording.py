"""Running the small, idempotent recording activities a session depends on.

They run as local activities and retry without limit (an outage of PostgreSQL only pauses a
session), except when PostgreSQL refuses a write for good: the activity then fails with a
non-retryable `record_refused` error, and the session cannot go on as if the write happened.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from reverie.models.workflow_io import RECORD_REFUSED, Activity
    from reverie.workflows.activity_options import RECORD_RETRY, RECORD_TIMEOUT


class SessionBroken(ApplicationError):
    """A write the session needs was refused for good. The session workflow catches it, records
    `session.error` and terminates; uncaught (in an update) it fails that update with its text."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type=RECORD_REFUSED, non_retryable=True)


def failure_message(error: BaseException) -> str:
    """The message of an activity failure, inside any ActivityError: what the activity said."""
    cause: BaseException | None = error
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    return getattr(cause, "message", None) or str(cause)


async def record(
    activity: Activity,
    arg: Any,
    *,
    summary: str | None = None,
    result_type: type | None = None,
) -> Any:
    """Run one recording local activity; a permanent refusal raises `SessionBroken`."""
    try:
        return await workflow.execute_local_activity(
            activity,
            arg,
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
            summary=summary,
            result_type=result_type,
        )
    except (ActivityError, ApplicationError) as error:
        # A local activity's failure arrives as its ApplicationError itself (a regular
        # activity's as an ActivityError around it): accept both.
        cause = error.cause if isinstance(error, ActivityError) else error
        if isinstance(cause, ApplicationError) and cause.non_retryable:
            raise SessionBroken(failure_message(cause)) from error
        raise
