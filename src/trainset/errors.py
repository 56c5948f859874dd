"""Error classes shared by every part of trainset.

An error says what was looked for, where, what was found and, where one exists, the fix.
The command line maps :class:`InputError` to exit code 2 and prints its message on one line.
"""

from __future__ import annotations


class TrainsetError(Exception):
    """Base class of every error trainset raises on purpose."""


class InputError(TrainsetError):
    """Bad input: a missing or unreadable file, a wrong key, dtype, shape or value, a bad flag.

    Nothing has been written when this is raised.
    """

    def __init__(
        self,
        message: str,
        *,
        file: object = None,
        key: str | None = None,
        expected: object = None,
        found: object = None,
    ) -> None:
        parts = []
        if file is not None:
            parts.append(f"{file}")
        if key is not None:
            parts.append(f"key '{key}'")
        prefix = ": ".join(parts)
        text = f"{prefix}: {message}" if prefix else message
        if expected is not None or found is not None:
            text += f" (expected {expected}, found {found})"
        super().__init__(text)
        self.file = file
        self.key = key
        self.expected = expected
        self.found = found
