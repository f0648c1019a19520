"""`compact_transcript`: Reverie's own compaction of a long session's transcript.

For models the Messages API does not compact for (and whenever the model answers 400 "prompt is
too long" or stops at `model_context_window_exceeded`), the older part of the transcript is
summarised by a model call and the summary stands for it in every later request; the recent
part is kept as it is. The cut is always before an answer of the model whose tool uses all have
their results after the cut, so no tool use is ever parted from its result.

Idempotent by the workflow's compaction id: a compaction already recorded is returned as it is,
and the row, the `agent.thread_context_compacted` event and the usage are written in one
transaction, once.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
from temporalio import activity
from temporalio.exceptions import ApplicationError

from reverie.activities.events import refusals_are_final
from reverie.activities.model import call_with_heartbeats, classify, usage_of
from reverie.activities.model_facts import ModelCatalog
from reverie.models.common import derived_id
from reverie.models.sessions import Usage
from reverie.models.workflow_io import Activity, CompactInput, CompactionResult
from reverie.settings import Settings
from reverie.store import agents, events, sessions, transcript
from reverie.store.pool import Pool
from reverie.store.transcript import Row

SUMMARY_SYSTEM = (
    "You compact the working memory of an AI agent. You are given the summary so far (if any) "
    "and the next part of the agent's conversation with its user and its tools. Write one "
    "updated summary that replaces both: the user's goals and instructions, decisions made, "
    "facts learnt, files, commands and results the agent still needs, and what remains to do. "
    "Be concise and concrete. Write only the summary."
)
# The recent part kept as it is: at most this share of the compaction target.
KEEP_SHARE = 0.5
# Each summarising call reads at most this share of the target (the summary so far included).
CHUNK_SHARE = 0.5
# Tokens are estimated as characters / 4, as the Messages API roughly counts English text.
CHARS_PER_TOKEN = 4
MIN_CHUNK_TOKENS = 64
# TEST HOOK, never set in production: when "1", the activity blocks for ever right after it
# committed a compaction, so a test can kill the worker between the commit and Temporal hearing.
TEST_HOOK_FREEZE_AFTER_COMPACTION = "REVERIE_TEST_HOOK_FREEZE_AFTER_COMPACTION"


def estimate_tokens(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value)
    return len(text) // CHARS_PER_TOKEN


def _tool_uses(row: Row) -> set[str]:
    return {
        b["id"]
        for b in row.content
        if isinstance(b, dict) and b.get("type") == "tool_use" and "id" in b
    }


def _tool_results(row: Row) -> set[str]:
    return {
        b["tool_use_id"]
        for b in row.content
        if isinstance(b, dict) and b.get("type") == "tool_result" and "tool_use_id" in b
    }


def choose_cut(rows: Sequence[Row], keep_tokens: int) -> int | None:
    """Index of the first row kept (rows before it are summarised), or None if none fits.

    A cut goes before an answer of the model (so the kept part starts with one, after the summary
    sent as a user turn) and only where every tool result kept answers a tool use kept, so no
    pair is ever cut. Of the valid cuts, the one keeping the most that fits in `keep_tokens`;
    if none fits, the one keeping the least.
    """
    valid: list[int] = []
    used: set[str] = set()
    answered: set[str] = set()
    # Walk from the end: the kept part grows one row at a time.
    for index in range(len(rows) - 1, 0, -1):
        used |= _tool_uses(rows[index])
        answered |= _tool_results(rows[index])
        if rows[index].role == "assistant" and answered <= used:
            valid.append(index)
    if not valid:
        return None
    sizes = [estimate_tokens(row.content) for row in rows]
    fitting = [i for i in valid if sum(sizes[i:]) <= keep_tokens]
    return min(fitting) if fitting else max(valid)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 40] + f" [... {len(text) - limit} more]"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict):
            kind = block.get("type")
            parts.append(block.get("text") if kind == "text" else f"[{kind}]")
    return "\n".join(p for p in parts if p)


def render(row: Row, block_limit: int) -> str:
    """One transcript row as plain text for the summariser (no tool-use pairing rules, no
    signatures to keep), each block clipped to `block_limit` characters."""
    lines = []
    for block in row.content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            lines.append(_clip(block.get("text", ""), block_limit))
        elif kind == "tool_use":
            tool_input = _clip(json.dumps(block.get("input"), ensure_ascii=False), block_limit)
            lines.append(f"[tool use {block.get('name')} (id {block.get('id')}): {tool_input}]")
        elif kind == "tool_result":
            error = " (error)" if block.get("is_error") else ""
            body = _clip(_text_of(block.get("content")), block_limit)
            lines.append(f"[tool result{error} for {block.get('tool_use_id')}: {body}]")
        elif kind == "compaction":
            lines.append(f"[summary of what came before: {block.get('content') or ''}]")
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            lines.append(f"[{kind}]")
    who = "User" if row.role == "user" else "Agent"
    return f"{who}:\n" + "\n".join(lines)


def _prompt(summary: str | None, part: str) -> str:
    head = f"<summary_so_far>\n{summary}\n</summary_so_far>\n\n" if summary else ""
    return (
        f"{head}<conversation>\n{part}\n</conversation>\n\n"
        "Write the updated summary of everything above."
    )


class CompactionActivities:
    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        client: anthropic.AsyncAnthropic,
        catalog: ModelCatalog,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._client = client
        self._catalog = catalog
        self._freeze_after_commit = os.environ.get(TEST_HOOK_FREEZE_AFTER_COMPACTION) == "1"

    @activity.defn(name=Activity.COMPACT_TRANSCRIPT)
    async def compact_transcript(self, params: CompactInput) -> CompactionResult:
        with refusals_are_final(f"record compaction {params.compaction_id}"):
            result = await self._compact(params)
        if self._freeze_after_commit and result.compacted:
            await asyncio.Event().wait()  # the test hook: the test kills the worker here
        return result

    async def _compact(self, params: CompactInput) -> CompactionResult:
        if await transcript.compaction(self._pool, params.compaction_id) is not None:
            return CompactionResult(compacted=True)  # an earlier attempt recorded it
        agent = await agents.get(self._pool, params.agent_id, params.agent_version)
        model = agent.model.id
        if params.context_window_tokens:
            self._catalog.learn_window(model, params.context_window_tokens)
        previous = await transcript.latest_compaction(self._pool, params.session_id)
        rows = await transcript.rows_after(
            self._pool, params.session_id, previous.upto_seq if previous else 0
        )
        target = await self._catalog.threshold(model)
        if params.reason != "threshold":
            # The model refused the prompt, or its window filled up: aim at well below it.
            size = sum(estimate_tokens(row.content) for row in rows)
            size += estimate_tokens(previous.summary) if previous else 0
            target = min(target, max(size // 2, MIN_CHUNK_TOKENS))
        cut = choose_cut(rows, int(target * KEEP_SHARE))
        if cut is None:
            return CompactionResult(
                compacted=False,
                detail="nothing older can be summarised without parting a tool use from its "
                "result (the transcript holds a single exchange)",
            )
        summary, usage = await self._summarise(
            model, previous.summary if previous else None, rows[:cut], target
        )
        now = datetime.now(UTC)
        event_id = derived_id("sevt", params.compaction_id, "compacted")
        async with self._pool.acquire() as conn, conn.transaction():
            if await transcript.add_compaction(
                conn,
                params.compaction_id,
                params.session_id,
                rows[cut - 1].seq,
                summary,
                params.reason,
            ):
                await events.append(
                    conn,
                    params.session_id,
                    [(event_id, "agent.thread_context_compacted", {}, now)],
                )
                await sessions.add_usage(conn, params.session_id, usage)
        return CompactionResult(compacted=True)

    async def _summarise(
        self, model: str, summary: str | None, rows: Sequence[Row], target: int
    ) -> tuple[str, Usage]:
        """Fold the rows into the running summary, a part at a time; a part the model finds
        too long is halved and read again."""
        usage = Usage()
        chunk_tokens = max(int(target * CHUNK_SHARE), MIN_CHUNK_TOKENS)
        max_tokens = max(256, min(self._settings.max_tokens, target // 4))
        start = 0
        while start < len(rows):
            budget = max(chunk_tokens - estimate_tokens(summary or ""), MIN_CHUNK_TOKENS)
            block_limit = budget * CHARS_PER_TOKEN // 2
            texts: list[str] = []
            end = start
            while end < len(rows):
                text = render(rows[end], block_limit)
                if texts and estimate_tokens("\n\n".join([*texts, text])) > budget:
                    break
                texts.append(text)
                end += 1
            request = {
                "model": model,
                "max_tokens": max_tokens,
                "system": SUMMARY_SYSTEM,
                "messages": [
                    {"role": "user", "content": _prompt(summary, "\n\n".join(texts))},
                ],
            }
            try:
                message = await call_with_heartbeats(self._client, request)
            except anthropic.APIStatusError as error:
                details, _, _ = classify(error)
                if details.prompt_too_long and chunk_tokens > MIN_CHUNK_TOKENS:
                    chunk_tokens = max(chunk_tokens // 2, MIN_CHUNK_TOKENS)
                    continue
                raise self._failure(error) from error
            except (anthropic.APIConnectionError, anthropic.APITimeoutError) as error:
                raise self._failure(error) from error
            usage = usage.plus(usage_of(message.usage))
            text = "\n".join(b.text for b in message.content if getattr(b, "type", "") == "text")
            summary = text.strip() or summary or "(nothing to summarise)"
            start = end
        return summary or "(nothing to summarise)", usage

    def _failure(self, error: Exception) -> ApplicationError:
        """A failed summarising call: retried by Temporal within the compaction's bound when
        the model's error is worth it (honouring `retry-after`, capped), otherwise final."""
        details, retryable, retry_after = classify(error)
        delay = None
        if retryable and retry_after is not None:
            delay = timedelta(seconds=min(retry_after, self._settings.model_max_backoff_seconds))
        return ApplicationError(
            details.message,
            details.model_dump(),
            type=details.error_type,
            non_retryable=not retryable,
            next_retry_delay=delay,
        )
