"""The yardstick a Reverie turn is compared with: a bare Temporal workflow update that runs one
activity and returns, on the same server, with a worker tuned as Reverie's.

A Reverie turn cannot cost less than this (an update into a workflow, one activity, the update's
answer); `bench/session_overhead.py` measures both in one run and prints their ratio.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bare_step")
async def bare_step(value: int) -> int:
    return value + 1


@workflow.defn(name="BareRoundTrip")
class BareRoundTrip:
    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._done)

    @workflow.update
    async def ask(self, value: int) -> int:
        return await workflow.execute_activity(
            bare_step, value, start_to_close_timeout=timedelta(seconds=30)
        )

    @workflow.signal
    def finish(self) -> None:
        self._done = True
