"""Replies as markdown ``body`` plus an HTML ``formatted_body``, trimmed to fit an event.

Only the markdown that the commands write is rendered: fenced code blocks, ``#``
headings, ``-`` lists, inline code and bold. Everything else is escaped text, so a
user name or a room topic quoted in a reply cannot inject HTML.
"""

from __future__ import annotations

import html
import re

# Events are capped at 64 KiB; body and formatted_body together stay under this,
# leaving room for the rest of the PDU (ids, hashes, signatures).
MAX_REPLY_BYTES = 60 * 1024
FENCE = "```"
_BROKEN_FENCE = "`\u200b``"  # a zero-width space keeps it from closing a block
_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def code_block(text: str, lang: str = "") -> str:
    """``text`` as a fenced block (fences inside it are broken up so they cannot end it)."""
    broken = text.replace(FENCE, _BROKEN_FENCE)
    return f"{FENCE}{lang}\n{broken}\n{FENCE}"


def inline(text: str) -> str:
    """One line of markdown text as HTML: inline code and bold, the rest escaped."""
    out: list[str] = []
    last = 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last:match.start()], quote=False))
        if match.group(1) is not None:
            out.append(f"<code>{html.escape(match.group(1), quote=False)}</code>")
        else:
            out.append(f"<strong>{html.escape(match.group(2), quote=False)}</strong>")
        last = match.end()
    out.append(html.escape(text[last:], quote=False))
    return "".join(out)


def to_html(markdown: str) -> str:
    parts: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    lines = markdown.splitlines()

    def flush() -> None:
        if paragraph:
            parts.append("<p>" + "<br>\n".join(inline(p) for p in paragraph) + "</p>")
            paragraph.clear()
        if items:
            parts.append("<ul>\n" + "\n".join(f"<li>{inline(i)}</li>" for i in items)
                         + "\n</ul>")
            items.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(FENCE):
            flush()
            lang = stripped[len(FENCE):].strip()
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != FENCE:
                body.append(lines[i])
                i += 1
            attr = f' class="language-{html.escape(lang)}"' if lang else ""
            parts.append(f"<pre><code{attr}>"
                         + html.escape("\n".join(body), quote=False) + "\n</code></pre>")
        elif not stripped:
            flush()
        elif stripped.startswith("#"):
            flush()
            level = min(len(stripped) - len(stripped.lstrip("#")), 4)
            parts.append(f"<h{level + 1}>{inline(stripped.lstrip('#').strip())}</h{level + 1}>")
        elif stripped.startswith("- "):
            if paragraph:
                flush()
            items.append(stripped[2:])
        else:
            if items:
                flush()
            paragraph.append(line)
        i += 1
    flush()
    return "\n".join(parts)


def _size(body: str, formatted: str) -> int:
    return len(body.encode()) + len(formatted.encode())


def render(markdown: str, limit: int = MAX_REPLY_BYTES) -> tuple[str, str]:
    """(body, formatted_body) of a reply, trimmed with a note when too large for an event."""
    formatted = to_html(markdown)
    total = _size(markdown, formatted)
    if total <= limit:
        return markdown, formatted
    keep = len(markdown)
    while True:
        keep = int(keep * min(0.9, limit / total))
        cut = markdown[:keep]
        cut = cut[:cut.rfind("\n")] if "\n" in cut else cut
        if cut.count(FENCE) % 2:
            cut += "\n" + FENCE
        note = (f"\n\n**Reply trimmed**: {len(cut.encode())} of {len(markdown.encode())} "
                "bytes shown (events are capped at 64 KiB).")
        body = cut + note
        formatted = to_html(body)
        if _size(body, formatted) <= limit or keep < 64:
            return body, formatted


def command_input(lines: list[str]) -> str:
    """The input of a command: the lines after it, the inside of a code block if any."""
    inside: list[str] = []
    fenced = False
    seen_fence = False
    for line in lines:
        if line.strip().startswith(FENCE):
            if seen_fence and fenced:
                break
            fenced = seen_fence = True
            continue
        if fenced:
            inside.append(line)
    if seen_fence:
        return "\n".join(inside)
    return "\n".join(lines)
