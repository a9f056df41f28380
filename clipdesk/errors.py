"""Errors the user can act on. Anything else reaching the top is a bug."""

from __future__ import annotations

from typing import Literal

# Why a model could not be fetched, for a caller that words it its own way (the window)
# instead of reading the message: "offline" (HF_HUB_OFFLINE is set), "no_network" (the
# hub could not be reached), "connection_dropped" (a download kept losing its connection).
FetchFailure = Literal["offline", "no_network", "connection_dropped"]


class ClipdeskError(Exception):
    """An error with a message meant for the user (no traceback needed)."""


class ModelUnavailableError(ClipdeskError):
    """The requested model or its weights cannot be loaded on this machine.

    ``reason`` says, where the model could not be fetched, why; ``summary`` is then the
    message without the CLI's advice (which commands to run), and ``by_hand`` whether it
    says which file to fetch from where (a catalog model) for an import to take."""

    def __init__(
        self,
        message: str,
        *,
        reason: FetchFailure | None = None,
        summary: str = "",
        by_hand: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason: FetchFailure | None = reason
        self.summary = summary or message
        self.by_hand = by_hand


class LibraryError(ClipdeskError):
    """The library folder or its database cannot be used."""


class NotIndexedError(ClipdeskError):
    """A search needs vectors that the library does not have yet."""


class StorageError(LibraryError):
    """The library's storage failed in a way the user can fix: a full disk, a read-only or
    vanished folder, a damaged database. Nothing that was committed is lost."""
