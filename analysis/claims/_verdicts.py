"""Deciding the whole catalogue on one experiment, and the verdicts as table rows."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from analysis.claims._catalogue import (
    CLAIMS,
    DOCUMENTED_STRATEGIES,
    NOT_TESTED,
    Claim,
    ClaimVerdict,
)
from analysis.claims._common import Experiment, Outcome
from analysis.claims._forgetting import FORGETTING_CHECKS
from analysis.claims._joint_training import JOINT_TRAINING_CHECKS
from analysis.claims._transfer import TRANSFER_CHECKS
from analysis.ranking import RAN_PLAN, TrialRecord

__all__ = ["check_claims", "claims_table"]

# Each family holds the checks of its own claim ids (disjoint), so merging them loses none;
# check_claims looks every claim of CLAIMS up here, so a claim with no check fails loudly.
_CHECKS: dict[str, Callable[[Experiment], Outcome]] = {
    **TRANSFER_CHECKS,
    **FORGETTING_CHECKS,
    **JOINT_TRAINING_CHECKS,
}


def _curves(epochs: pa.Table | None, trial_ids: set[str]) -> dict[str, list[dict[str, Any]]] | None:
    if epochs is None:
        return None
    by_trial: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in epochs.to_pylist():
        if row.get("trial_id") in trial_ids:
            by_trial[row["trial_id"]].append(row)
    return {
        tid: sorted(rows, key=lambda row: row.get("epoch") or 0) for tid, rows in by_trial.items()
    }


def check_claims(
    records: Sequence[TrialRecord], epochs: pa.Table | None = None
) -> list[ClaimVerdict]:
    """Every claim of :data:`CLAIMS`, decided on one experiment, then one ``not tested``
    line per strategy of the experiment's own, about which the documents claim nothing.

    Args:
        records: The experiment's trials (e.g. from :func:`analysis.results.trial_records`).
        epochs: Its per-epoch table; claims about curves are ``not tested`` without it.

    Returns:
        One verdict per claim, in :data:`CLAIMS` order.
    """
    ran = {r.trial_id for r in records if r.status in RAN_PLAN}
    experiment = Experiment(records=tuple(records), curves=_curves(epochs, ran))
    verdicts = []
    for claim in CLAIMS:
        verdict, detail, numbers = _CHECKS[claim.id](experiment)
        verdicts.append(ClaimVerdict(claim, verdict, detail, numbers))
    own = dict.fromkeys(r.strategy for r in records if r.strategy not in DOCUMENTED_STRATEGIES)
    for strategy in own:
        claim = Claim(
            f"own:{strategy}",
            "experiment",
            f"{strategy} is a strategy of this experiment's own.",
            "",
        )
        detail = (
            f"The source documents make no claim about {strategy}, so there is nothing to"
            f" check; its trials are ranked with the others against the targets"
            f" ({experiment.ran(strategy)})."
        )
        verdicts.append(ClaimVerdict(claim, NOT_TESTED, detail, {}))
    return verdicts


def claims_table(verdicts: Sequence[ClaimVerdict]) -> list[dict[str, Any]]:
    """The verdicts as JSON-ready rows: the claim's fields, verdict, detail and numbers."""
    return [
        {
            **dataclasses.asdict(v.claim),
            "verdict": v.verdict,
            "detail": v.detail,
            "numbers": v.numbers,
        }
        for v in verdicts
    ]
