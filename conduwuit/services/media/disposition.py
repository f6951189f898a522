"""How stored media is presented: content type, inline or attachment, a safe file name.

Only types a browser renders without running anything are served ``inline``:
images (not SVG, which can carry script), audio, video and plain text, the
relevant part of the spec's list for serving inline content (MSC2702).
Everything else is an ``attachment``. File names are sanitised and encoded
per RFC 6266 / RFC 5987 so that no client can be tricked into a path, a
header injection or a right-to-left spoofed extension.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

OCTET_STREAM = "application/octet-stream"

INLINE_TYPES = frozenset({
    "image/apng", "image/avif", "image/gif", "image/jpeg", "image/png", "image/webp",
    "audio/aac", "audio/flac", "audio/mp4", "audio/mpeg", "audio/ogg", "audio/wav",
    "audio/wave", "audio/webm", "audio/x-flac", "audio/x-pn-wav", "audio/x-wav",
    "video/mp4", "video/ogg", "video/quicktime", "video/webm",
    "text/plain",
})

MAX_FILENAME_CHARS = 255

# Bidirectional overrides and isolates reorder how a name is displayed
# ("invoice\u202egnp.exe" looks like "invoiceexe.png").
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")
# RFC 5987 attr-char beyond what quote() always keeps (letters, digits, "_.-~")
_ATTR_SAFE = "!#$&+^`|"


def base_type(content_type: str | None) -> str:
    """``"Text/Plain; charset=utf-8"`` -> ``"text/plain"``; ``""`` when absent."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_inline(content_type: str | None) -> bool:
    return base_type(content_type) in INLINE_TYPES


def served_content_type(content_type: str | None) -> str:
    """The type to send: the stored one, or octet-stream when none (or a broken one) is known."""
    if not content_type:
        return OCTET_STREAM
    kind = base_type(content_type)
    main, _, sub = kind.partition("/")
    if not main or not sub or any(ch in content_type for ch in "\r\n\0"):
        return OCTET_STREAM
    if not content_type.isascii():
        return OCTET_STREAM
    return content_type.strip()


def sanitise_filename(name: str | None) -> str | None:
    """A file name safe to offer to a client, or ``None`` when nothing usable is left.

    Removes path separators, control characters and bidirectional overrides, trims
    surrounding spaces and leading dots (no hidden files, no ``..``) and caps the length.
    """
    if not name:
        return None
    kept = []
    for ch in name:
        if ch in "/\\" or ch in _BIDI_CONTROLS:
            continue
        if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Zl", "Zp"):
            continue
        kept.append(ch)
    cleaned = "".join(kept).strip().lstrip(".").strip()
    if len(cleaned) > MAX_FILENAME_CHARS:
        stem, dot, ext = cleaned.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            cleaned = stem[: MAX_FILENAME_CHARS - len(ext) - 1] + "." + ext
        else:
            cleaned = cleaned[:MAX_FILENAME_CHARS]
    return cleaned or None


def content_disposition(inline: bool, filename: str | None) -> str:
    """The ``Content-Disposition`` value; ``filename`` must already be sanitised."""
    kind = "inline" if inline else "attachment"
    if not filename:
        return kind
    if filename.isascii() and '"' not in filename and "\\" not in filename:
        return f'{kind}; filename="{filename}"'
    return f"{kind}; filename*=utf-8''{quote(filename, safe=_ATTR_SAFE)}"
