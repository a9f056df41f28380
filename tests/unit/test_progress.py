"""Progress reports: rates and time left."""

from __future__ import annotations

import pytest

from clipdesk import progress
from clipdesk.progress import RateMeter


def test_time_handed_to_the_caller_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A paused job holds still at a yield: ten minutes of pause are not ten minutes of
    work (the window showed 21.6 photos/s after a pause, for 255.9 before)."""
    clock = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    meter = RateMeter(total=100, started=100.0)
    clock[0] = 110.0
    assert meter.report("embed", 10).rate == pytest.approx(1.0)
    clock[0] = 710.0  # paused by the caller for 600 s
    meter.resumed()
    clock[0] = 720.0
    later = meter.report("embed", 20)
    assert later.rate == pytest.approx(1.0) and later.eta_s == pytest.approx(80.0)
    meter.resumed()  # resumed at once: nothing to take off
    clock[0] = 730.0
    assert meter.report("embed", 30).rate == pytest.approx(1.0)
