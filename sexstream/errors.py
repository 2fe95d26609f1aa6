"""The image-level error: an input that cannot become a catalog.

Errors are values at the image level: whoever measures an image turns an `InputError`
into the image's row (status and reason) and goes on with the next image. Exceptions
of other kinds are programmer mistakes or a broken installation.
"""
from __future__ import annotations


class InputError(Exception):
    """An input that cannot become a catalog; `str()` is the one-line reason.

    `status` is "failed" for a permanent problem and "incomplete" for a file that may
    still be growing (truncated against what its headers declare). `transient` marks a
    failure worth another attempt (a timeout, a signal, an I/O error)."""

    def __init__(self, reason: str, status: str = "failed", transient: bool = False):
        super().__init__(reason)
        self.status = status
        self.transient = transient
