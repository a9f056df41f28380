"""Progress reports: rates and time left."""

from __future__ import annotations

import pytest

from clipdesk.progress import RateMeter


def test_time_handed_to_the_caller_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A paused job holds still at a yield: ten minutes of pause are not ten minutes of
    work (the window showed 21.6 photos/s after a pause, for 255.9 before)."""
    clock = [100.0]
    monkeypatch.setattr("clipdesk.progress.time.perf_counter", lambda: clock[0])
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


def test_work_done_before_the_meter_counts_as_done_not_in_the_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first index stores the backend measurement's 256 photos before the pipeline starts:
    they are done, but the ETA comes from the pipeline's own speed."""
    clock = [100.0]
    monkeypatch.setattr("clipdesk.progress.time.perf_counter", lambda: clock[0])
    meter = RateMeter(total=300, started=100.0, base=256)
    clock[0] = 104.0
    report = meter.report("embed", 264)
    assert (report.done, report.total) == (264, 300)
    assert report.rate == pytest.approx(2.0) and report.eta_s == pytest.approx(18.0)
