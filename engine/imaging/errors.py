"""The imaging layer's error, apart from the decoders: the viewer catches it without
importing pydicom and its codecs."""

from __future__ import annotations

from clinibox_common.errors import CliniboxError

NOT_ENOUGH_MEMORY = "cannot decode: not enough memory on this box"


class DecodeError(CliniboxError):
    """A file the box cannot turn into an image; ``reason`` is readable by clinic staff."""

    kind = "cannot decode"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxNotStarted(DecodeError):
    """The decoder's child process could not be started: the box's fault, never the
    object's (the worker tries the object again later rather than quarantining it)."""
