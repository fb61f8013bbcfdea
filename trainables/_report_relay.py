"""How an N-worker trial's reports reach Tune: every one, in order, before the trial ends.

Ray Tune's own bridge (``ray.tune.integration.ray_train.TuneReportCallback``, Ray 2.60)
puts each report of the Train run into a queue that Tune's main thread polls in turn
with the trial's result queue, 0.2 s each. When ``TorchTrainer.fit`` returns, the
trial function returns and Tune's end-of-trial marker goes straight to the result
queue: if the last report is still waiting in the other queue, Tune takes the marker
first and the trial ends one epoch short, shown as stopped early. A fast last epoch
and a fast teardown are enough (a tiny data set, or a short last phase).

Here the trial's own thread is the only one that hands Tune its reports: the Train
run's callback puts each into a queue of the trial's, and the trial thread passes
them on with ``tune.report`` until ``fit`` has returned and the queue is empty. Tune
sees every report, in order, and the end-of-trial marker last.

When Tune stops the trial (a scheduler's decision, the search's end), ``tune.report``
raises ``SystemExit`` in the trial thread (Tune reports synchronously, so after a
report the thread waits there for Tune's next step); the Train run is then aborted, so
that its workers and their CPUs are free for the next trial on the same, reused actor.
Tune gives the thread ``TUNE_FUNCTION_THREAD_TIMEOUT_S`` (``search.ray_runtime``) to end.

The abort itself is Ray Train's private part (``_ray_train_internals.abort_train_run``).
"""

from __future__ import annotations

import queue as queue_module
import threading
from collections.abc import Callable
from typing import Any

import ray
from ray.train import Checkpoint, UserCallback
from ray.util.queue import Queue

__all__ = ["ReportsToTrial", "relay_until_fit_returns"]

#: The key of a relayed report that names the Train run's checkpoint (as Ray's bridge
#: names it); the checkpoint itself stays in the Train run's storage.
_CHECKPOINT_PATH_KEY = "checkpoint_path"

#: Seconds between looks at whether ``fit`` has returned while no report comes.
_POLL_S = 0.2
#: Seconds an aborted Train run's ``fit`` thread has to end; with the abort's own
#: (``_ray_train_internals.ABORT_S``) well within Tune's wait for the trial thread
#: (``TUNE_FUNCTION_THREAD_TIMEOUT_S``).
_FIT_ENDS_S = 10.0


class ReportsToTrial(UserCallback):
    """A Train run callback (it runs in the run's controller) that sends rank 0's
    metrics of each report, and once the controller's own handle, to ``queue``."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._sent_controller = False

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None
    ) -> None:
        if not self._sent_controller:
            # The trial needs it to abort the run when Tune stops the trial.
            self.queue.put(("controller", ray.get_runtime_context().current_actor))
            self._sent_controller = True
        reported = dict(metrics[0])
        if checkpoint is not None:
            reported[_CHECKPOINT_PATH_KEY] = checkpoint.path
        self.queue.put(("report", reported))


def relay_until_fit_returns(
    fit: Callable[[], Any],
    queue: Any,
    report: Callable[[dict[str, Any]], None],
    abort: Callable[[Any], None],
) -> None:
    """Run ``fit`` in a thread of its own and pass each report in ``queue`` to
    ``report`` until ``fit`` has returned and nothing is left; raise what ``fit``
    raised.

    ``queue`` is a ``ray.util.queue.Queue`` (``get(timeout=)`` raising
    ``queue.Empty``) fed by `ReportsToTrial`. If ``report`` raises (Tune stopping the
    trial raises ``SystemExit``), the run is aborted with ``abort(controller)``, and
    ``fit`` is waited for, before the exception goes on.
    """
    failure: list[BaseException] = []

    def run_fit() -> None:
        try:
            fit()
        except BaseException as error:  # handed to the trial thread below
            failure.append(error)

    fitting = threading.Thread(target=run_fit, name="phasetune-train-fit", daemon=True)
    fitting.start()
    controller = None
    relayed = False
    try:
        while True:
            # Every report was queued before ``fit`` returned (the callback's put
            # blocks), so once it has returned, an empty queue means all are through.
            returned = not fitting.is_alive()
            try:
                kind, item = queue.get(timeout=_POLL_S)
            except queue_module.Empty:
                if returned:
                    break
                continue
            if kind == "controller":
                controller = item
            else:
                report(item)
        relayed = True
    finally:
        if not relayed and controller is not None:
            abort(controller)
            fitting.join(_FIT_ENDS_S)
    fitting.join()
    if failure:
        raise failure[0]
