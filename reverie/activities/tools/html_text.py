"""HTML to readable text, crudely: the page's words without its markup, scripts or styles.

Python's `HTMLParser` takes quadratic time on some hostile pages (100 KB of unclosed tags: a
minute and a half of CPU holding the GIL) and can raise on malformed markup, so the worker never
runs it in its own process: `readable_text` runs this file as a script in a child process under
a deadline, and falls back to a linear tag strip when the child fails or runs out of time.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIPPED = {"script", "style", "noscript", "template", "svg"}
_BLOCKS = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul", "title",
}  # fmt: skip


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and not self._skipping and not self.title:
            self._in_title = True
        elif tag in _SKIPPED:
            self._skipping += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _Extractor()
    parser.feed(html)
    parser.close()
    lines = (
        re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(parser.parts).split("\n")
    )
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = parser.title.strip()
    return f"# {title}\n\n{body}" if title else body


# `[^<>]` rather than `[^>]`: a run of unclosed tags must not make every `<` scan to the end.
_TAG = re.compile(r"<[^<>]*>")
HTML_TIMEOUT_SECONDS = 5.0


def strip_tags(html: str) -> str:
    """A linear fallback: markup removed, entities decoded, blank runs collapsed."""
    import html as entities

    text = entities.unescape(_TAG.sub(" ", _without_skipped(html)))
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _without_skipped(html: str) -> str:
    """Scripts, styles and the like cut out in one pass (an unclosed one ends the page). Each
    tag's next position is remembered, so the text is scanned a bounded number of times."""
    lower = html.lower()
    kept: list[str] = []
    position = 0
    upcoming = {tag: lower.find("<" + tag) for tag in _SKIPPED}
    while True:
        for tag, index in upcoming.items():
            if 0 <= index < position:
                upcoming[tag] = lower.find("<" + tag, position)
        starts = [(index, tag) for tag, index in upcoming.items() if index >= 0]
        if not starts:
            kept.append(html[position:])
            return "".join(kept)
        start, tag = min(starts)
        kept.append(html[position:start])
        end = lower.find("</" + tag, start)
        if end < 0:
            return "".join(kept)
        close = lower.find(">", end)
        position = len(html) if close < 0 else close + 1


async def readable_text(html: str) -> str:
    """`html_to_text` in a child process (this file, stdlib only, so it starts fast), started
    where children inherit nothing else of the worker (process_loop.py)."""
    from reverie.activities.tools.process_loop import on_process_loop

    return await on_process_loop(_readable_text(html))


async def _readable_text(html: str) -> str:
    import asyncio
    import sys

    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            __file__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return strip_tags(html)
    try:
        out, _ = await asyncio.wait_for(
            child.communicate(html.encode("utf-8", "surrogatepass")), HTML_TIMEOUT_SECONDS
        )
    except TimeoutError:
        child.kill()
        await child.wait()
        return strip_tags(html)
    except BaseException:  # cancelled: the child goes too
        child.kill()
        await asyncio.shield(child.wait())
        raise
    if child.returncode != 0:
        return strip_tags(html)
    return out.decode("utf-8", "replace")


if __name__ == "__main__":
    import sys

    page = sys.stdin.buffer.read().decode("utf-8", "replace")
    sys.stdout.buffer.write(html_to_text(page).encode("utf-8", "replace"))
