"""The source documents' claims, each decided on an experiment with the numbers behind it.

Every claim quotes the sentence it comes from. Its verdict is ``supported``, ``refuted``
or ``not tested`` (the experiment lacks the strategies or metrics it needs; the detail
says which). Only trials that ran their plan (``done`` or ``early_stopped``) are
compared: a trial a scheduler stopped was judged on a fraction of its plan.

Decision rules (accuracies and task metrics in percent, differences in points):

- A claim that one strategy ends *better* compares the best trial of each (by the final
  metric) and reports the medians beside them; the best trials decide. A named gap
  ("2-5% better") is supported when the measured gap reaches the claim's lower bound;
  a gap that names no size must reach ``MIN_GAP_POINTS`` (1 point, in ``_common``).
- A claim about how a strategy *behaves* (overfits, is stable, forgets) is decided by
  the median over its trials, since one lucky trial says little about a behaviour.
- An accuracy range ("85-95%") is supported when the best trial ends inside it.

The package, one idea a module:

- ``_catalogue``: the claims as data (`CLAIMS`, `Claim`), the verdict words and
  `ClaimVerdict`.
- ``_common``: an experiment's trials, per-trial numbers and the best/median comparison
  that every family of evidence uses.
- ``_transfer``: the transfer-learning document's claims (progressive vs single-phase).
- ``_forgetting``: the multi-task document's claims about forgetting (sequential, joint,
  EWC).
- ``_joint_training``: the multi-task document's claims about the joint phase (weights,
  losses, convergence, learning rate, the reported weights).
- ``_verdicts``: `check_claims`, which decides the catalogue, and `claims_table`.
"""

from __future__ import annotations

from analysis.claims._catalogue import (
    CLAIMS,
    NOT_TESTED,
    REFUTED,
    SUPPORTED,
    Claim,
    ClaimVerdict,
)
from analysis.claims._verdicts import check_claims, claims_table

__all__ = [
    "CLAIMS",
    "NOT_TESTED",
    "REFUTED",
    "SUPPORTED",
    "Claim",
    "ClaimVerdict",
    "check_claims",
    "claims_table",
]
