"""The reason classes: a failed or incomplete image's one-line reason -> one of a small,
fixed set of names, for metrics labels and log shippers.

An images row's `reason` names the file, sizes, the card at fault, ... -- perfect for a
person, useless as a metric label (one series per file would grow with history). Every
reason the core writes falls in one class here; anything unforeseen is "other".

>>> reason_class("truncated: header declares 8395200 bytes, file has 100000")
'truncated'
>>> reason_class("SExtractor timed out after 600 s (after 3 attempts)")
'timeout'
"""
from __future__ import annotations

import re

#: (class, pattern matched at the start of the reason), first match wins.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in (
    ("quarantined", r"quarantined:"),
    ("still_being_written", r"still being written|file changed while it was being read"),
    ("truncated", r"truncated|empty file"),
    ("too_large", r"too large"),
    ("not_fits", r"not a FITS file|\w+ file does not hold a FITS file|no image to measure|\d+-D image"),
    ("invalid_header", r"(invalid|unreadable) FITS header"),
    ("corrupt", r"broken \w+ stream|corrupt tile-compressed"),
    ("unreadable", r"symlink loop|dangling symlink|file vanished|a directory, not a file|not readable|I/O error"),
    ("timeout", r"SExtractor timed out|no verdict within"),
    ("out_of_memory", r"out of memory"),
    ("sextractor", r"SExtractor (failed|killed)"),
    ("crashed", r"internal error|the process measuring it was|result not transferable"),
))
#: Every class `reason_class` can return.
CLASSES: tuple[str, ...] = tuple(name for name, _ in RULES) + ("other",)


def reason_class(reason: str | None) -> str:
    """The class of a failed/incomplete image's `reason` (one of `CLASSES`)."""
    if reason:
        for name, pattern in RULES:
            if pattern.match(reason):
                return name
    return "other"
