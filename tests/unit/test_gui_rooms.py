"""The window's Qt-free parts: "latest request wins" and how the window words a model
that could not be fetched (from the error's fields, never from its message)."""

from __future__ import annotations

import subprocess
import sys
import threading

from clipdesk.errors import ModelUnavailableError
from clipdesk.gui.latest import LatestRequest, Request
from clipdesk.gui.words import sentence, unavailable_wording
from clipdesk.progress import CancelToken


def test_these_parts_import_no_qt() -> None:
    code = (
        "import sys, clipdesk.gui.latest, clipdesk.gui.words\n"
        "assert not [m for m in sys.modules if m.startswith(('PySide6', 'shiboken6'))]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_newer_request_cancels_the_older_and_only_the_latest_counts() -> None:
    latest = LatestRequest()
    first = latest.submit()
    assert latest.is_latest(first) and not first.token.cancelled
    second = latest.submit()
    assert first.token.cancelled and not second.token.cancelled
    assert not latest.is_latest(first) and latest.is_latest(second)
    third = latest.submit()
    assert second.token.cancelled and latest.is_latest(third)


def test_a_request_can_carry_its_own_token() -> None:
    latest = LatestRequest()
    token = CancelToken()
    request = latest.submit(token)
    assert request.token is token
    latest.submit()
    assert token.cancelled


def test_cancel_leaves_no_request_wanted() -> None:
    latest = LatestRequest()
    request = latest.submit()
    latest.cancel()
    assert request.token.cancelled and not latest.is_latest(request)
    latest.cancel()  # nothing to cancel: fine


def test_requests_from_many_threads_leave_exactly_one_latest() -> None:
    latest = LatestRequest()
    made: list[Request] = []
    lock = threading.Lock()

    def submit() -> None:
        for _ in range(200):
            request = latest.submit()
            with lock:
                made.append(request)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wanted = [r for r in made if latest.is_latest(r)]
    assert len(wanted) == 1
    assert all(r.token.cancelled for r in made if r is not wanted[0])


def test_a_reworded_message_still_gets_the_window_s_own_wording() -> None:
    """The window reads the error's fields: whatever the message says (here nothing that
    the old text matching looked for), it offers its menu, never a command line."""
    for by_hand in (False, True):
        error = ModelUnavailableError(
            "the hub is out of reach; run `clipdesk models fetch` later",
            reason="no_network",
            summary="the hub is out of reach",
            by_hand=by_hand,
        )
        said = unavailable_wording(error)
        assert said.startswith("The hub is out of reach")
        assert "File → Import weights file…" in said and "clipdesk models" not in said


def test_a_model_error_with_no_fetch_reason_is_said_as_it_is() -> None:
    error = ModelUnavailableError("weights file not found: /x.bin")
    assert error.reason is None and error.summary == str(error)
    assert unavailable_wording(error) == "Weights file not found: /x.bin"
    assert sentence("") == ""
