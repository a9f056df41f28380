"""How the window words what the services tell it (no Qt here: plain functions, tested
without a window). The services word things the CLI's way, naming commands; the window
says the same with its menus, from the typed fields, never by reading the message."""

from __future__ import annotations

import os

from clipdesk.errors import ModelUnavailableError


def model_wording(model: str) -> str:
    """A model as the status bar shows it: ``ARCH (TAG)`` or ``ARCH (weights file)`` for a
    spec; a name that already says what it is (``holiday (imported ViT-B-32)``) as it is."""
    arch, colon, weights = model.partition(":")
    if not colon or "(" in weights:
        return model
    return f"{arch} ({os.path.basename(weights) if os.sep in weights else weights})"


def unavailable_wording(error: ModelUnavailableError) -> str:
    """A model that could not be fetched, said the window's way: its ``summary`` (the
    message without the CLI's commands) and the window's own way to a weights file."""
    if error.reason is None:  # not a fetch that failed: the message says it all
        return sentence(str(error))
    if error.by_hand:  # the summary says which file to get from where
        return sentence(
            error.summary
            + ", then use File → Import weights file… (or check the connection and try again)"
        )
    return sentence(
        error.summary + ". Check the connection and try again; or, if you have the model's "
        "weights file, use File → Import weights file…"
    )


def sentence(text: str) -> str:
    """``text`` with a capital first letter (the services' messages start in lower case)."""
    return text[:1].upper() + text[1:]
