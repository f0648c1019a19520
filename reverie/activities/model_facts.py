"""What a worker knows of each model: whether the Messages API compacts its context itself
(`compact_20260112`), its context window, and so the threshold at which a session compacts.

Asked once per model from the Models API and kept for the worker's life; a failed look-up (a
server without that endpoint, a network error) means "unknown": Reverie then compacts by itself,
and asks again a few minutes later. A 400 "prompt is too long: N tokens > M maximum" teaches the
window too.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import anthropic

from reverie.settings import Settings

log = logging.getLogger(__name__)

COMPACT_EDIT = "compact_20260112"
COMPACT_BETA = "compact-2026-01-12"
# A prompt is compacted before it fills more than this share of a known context window.
WINDOW_SHARE = 0.8
LOOKUP_TIMEOUT_SECONDS = 10.0
RETRY_UNKNOWN_SECONDS = 300.0
_TOO_LONG = re.compile(r"prompt is too long", re.IGNORECASE)
_WINDOW = re.compile(r"(\d+)\s*tokens?\s*>\s*(\d+)\s*maximum", re.IGNORECASE)


@dataclass
class ModelFacts:
    api_compaction: bool = False
    context_window: int | None = None


def prompt_too_long(error: anthropic.APIStatusError) -> tuple[bool, int | None]:
    """(whether a 400 says the prompt exceeds the context window, the window if it says so)."""
    if error.status_code != 400 or not _TOO_LONG.search(str(error.message)):
        return False, None
    found = _WINDOW.search(str(error.message))
    return True, int(found.group(2)) if found else None


class ModelCatalog:
    def __init__(self, client: anthropic.AsyncAnthropic, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._facts: dict[str, tuple[ModelFacts, float | None]] = {}

    async def facts(self, model: str) -> ModelFacts:
        known = self._facts.get(model)
        if known is not None and (known[1] is None or known[1] > time.monotonic()):
            return known[0]
        facts, expires = await self._look_up(model)
        if known is not None and known[0].context_window and not facts.context_window:
            facts.context_window = known[0].context_window  # learnt from an error meanwhile
        self._facts[model] = (facts, expires)
        return facts

    async def _look_up(self, model: str) -> tuple[ModelFacts, float | None]:
        try:
            info = await self._client.beta.models.retrieve(model, timeout=LOOKUP_TIMEOUT_SECONDS)
        except Exception as error:
            log.info(
                "model %s: the Models API did not describe it (%s); Reverie compacts its "
                "sessions itself",
                model,
                error,
            )
            return ModelFacts(), time.monotonic() + RETRY_UNKNOWN_SECONDS
        capabilities = getattr(info, "capabilities", None)
        management = getattr(capabilities, "context_management", None)
        compact = getattr(management, "compact_20260112", None)
        facts = ModelFacts(
            api_compaction=bool(getattr(compact, "supported", False)),
            context_window=getattr(info, "max_input_tokens", None) or None,
        )
        return facts, None

    def learn_window(self, model: str, tokens: int) -> None:
        facts, expires = self._facts.get(model, (ModelFacts(), None))
        facts.context_window = tokens
        self._facts[model] = (facts, expires)

    async def uses_api_compaction(self, model: str) -> bool:
        return self._settings.api_compaction and (await self.facts(model)).api_compaction

    async def threshold(self, model: str) -> int:
        """Prompt tokens at which this model's sessions compact."""
        explicit = self._settings.compaction_threshold_for(model)
        if explicit is not None:
            return explicit
        threshold = self._settings.compaction_threshold_tokens
        window = (await self.facts(model)).context_window
        if window:
            threshold = min(threshold, int(window * WINDOW_SHARE))
        return threshold
