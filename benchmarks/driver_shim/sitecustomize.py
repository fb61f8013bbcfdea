"""A fault in the ``phasetune run`` driver itself, for ``benchmarks/faults.py``.

Python imports ``sitecustomize`` at start-up from its path; ``faults.py`` puts this
folder on the driver's ``PYTHONPATH`` only, with ``PHASETUNE_DRIVER_FAULT`` set to
``study:<control folder>``. The first write of a finished trial to the Optuna study
then writes ``<control>/armed.json`` (the driver's pid) and waits there, so the
script kills the driver in the middle of that write.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

_FAULT = os.environ.get("PHASETUNE_DRIVER_FAULT", "")

if _FAULT.startswith("study:"):
    from optuna.storages._rdb.storage import RDBStorage
    from optuna.trial import TrialState

    _control = Path(_FAULT.split(":", 1)[1])
    _write = RDBStorage.set_trial_state_values

    def _set_trial_state_values(self, trial_id, state, values=None):  # noqa: ANN001, ANN202
        if (
            state.is_finished()
            and state == TrialState.COMPLETE
            and not (_control / "fired").exists()
        ):
            _control.mkdir(parents=True, exist_ok=True)
            (_control / "fired").touch()
            marker = _control / "armed.json"
            marker.with_suffix(".partial").write_text(
                json.dumps({"pid": os.getpid(), "where": "study write"})
            )
            os.replace(marker.with_suffix(".partial"), marker)
            while True:
                time.sleep(0.05)
        return _write(self, trial_id, state, values)

    RDBStorage.set_trial_state_values = _set_trial_state_values
