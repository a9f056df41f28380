"""Errors the user can act on. Anything else reaching the top is a bug."""


class ClipdeskError(Exception):
    """An error with a message meant for the user (no traceback needed)."""


class ModelUnavailableError(ClipdeskError):
    """The requested model or its weights cannot be loaded on this machine."""


class LibraryError(ClipdeskError):
    """The library folder or its database cannot be used."""


class NotIndexedError(ClipdeskError):
    """A search needs vectors that the library does not have yet."""


class StorageError(LibraryError):
    """The library's storage failed in a way the user can fix: a full disk, a read-only or
    vanished folder, a damaged database. Nothing that was committed is lost."""
