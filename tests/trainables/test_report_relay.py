"""An N-worker trial's reports reach Tune in order, the last one included, and a trial
Tune stops aborts its Train run."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import pytest

from trainables._report_relay import relay_until_fit_returns


def _fit_that_reports(
    reports: queue.Queue, epochs: int, then: Callable[[], None] | None = None
) -> Callable[[], None]:
    """A Train run whose last report and return come back to back: the timing that
    lost the last epoch when Tune's main thread polled two queues in turn."""

    def fit() -> None:
        reports.put(("controller", "the controller"))
        for epoch in range(1, epochs + 1):
            reports.put(("report", {"epoch": epoch}))
        if then is not None:
            then()

    return fit


def _never_aborted(controller) -> None:
    raise AssertionError(f"aborted {controller} though the run ended by itself")


@pytest.mark.parametrize("repeat", range(10))
def test_every_report_reaches_the_trial_before_it_ends(repeat):
    reports: queue.Queue = queue.Queue()
    relayed = []
    relay_until_fit_returns(_fit_that_reports(reports, 5), reports, relayed.append, _never_aborted)
    assert relayed == [{"epoch": epoch} for epoch in range(1, 6)]


def test_a_failed_run_relays_its_reports_then_raises_its_error():
    reports: queue.Queue = queue.Queue()
    relayed = []

    def fail() -> None:
        raise RuntimeError("worker group failed")

    with pytest.raises(RuntimeError, match="worker group failed"):
        relay_until_fit_returns(
            _fit_that_reports(reports, 3, then=fail), reports, relayed.append, _never_aborted
        )
    assert [metrics["epoch"] for metrics in relayed] == [1, 2, 3]


def test_a_trial_tune_stops_aborts_its_train_run_and_waits_for_it():
    reports: queue.Queue = queue.Queue()
    aborted = threading.Event()
    fit_ended = threading.Event()

    def train_until_aborted() -> None:
        aborted.wait(timeout=30)
        fit_ended.set()

    def report(metrics) -> None:
        if metrics["epoch"] == 2:
            raise SystemExit(0)  # what tune.report raises when Tune stops the trial

    def abort(controller) -> None:
        assert controller == "the controller"
        aborted.set()

    fit = _fit_that_reports(reports, 3, then=train_until_aborted)
    with pytest.raises(SystemExit):
        relay_until_fit_returns(fit, reports, report, abort)
    assert aborted.is_set() and fit_ended.is_set()
