"""Errors a user can act on.

Every error raised on purpose by tarn is a :class:`TarnError`: it names where the problem is
and what to do about it, and the CLI prints it as one line instead of a traceback.
"""

from __future__ import annotations


class TarnError(Exception):
    """A problem the user can fix; ``hint`` says how."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} -> {self.hint}" if self.hint else self.message


class ConfigError(TarnError):
    """params.yaml is missing or does not validate."""


class LakeError(TarnError):
    """The lake or one of its files cannot be used."""


class EtlError(TarnError):
    """A batch cannot be extracted as a whole (unreadable file, schema mismatch)."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (or its type), for one-line error reports."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:limit]
