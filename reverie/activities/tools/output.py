"""A bounded buffer for a command's output: its start and its end, and how much was dropped."""

from __future__ import annotations

import re

OUTPUT_LIMIT = 100 * 1024
# Most of what matters (errors, results) comes last, so the tail gets the larger share.
HEAD_SHARE = 0.25
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class CappedOutput:
    """Keeps the first and last bytes of a stream, never more than `limit` in all."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self._head_limit = int(limit * HEAD_SHARE)
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        self._tail += chunk
        if len(self._tail) > self._tail_limit:
            del self._tail[: len(self._tail) - self._tail_limit]

    @property
    def dropped(self) -> int:
        return self.total - len(self._head) - len(self._tail)

    def text(self) -> str:
        if not self.dropped:
            return _decode(bytes(self._head + self._tail))
        head = _decode(bytes(self._head))
        tail = _decode(bytes(self._tail))
        note = (
            f"\n[output cut: {self.dropped:,} of {self.total:,} bytes dropped here; showing the "
            f"first {len(self._head):,} and the last {len(self._tail):,} bytes]\n"
        )
        return head + note + tail


def _decode(data: bytes) -> str:
    return _ANSI.sub("", data.decode("utf-8", errors="replace"))
