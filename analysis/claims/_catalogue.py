"""The catalogue: the source documents' claims as data, and the record of a verdict.

Nothing here decides anything; the checks of ``_transfer``, ``_forgetting`` and
``_joint_training`` do, one per claim id.
"""

from __future__ import annotations

import dataclasses

from trainables.strategy_names import BUILTIN_STRATEGY_NAMES

__all__ = [
    "CLAIMS",
    "DOCUMENTED_STRATEGIES",
    "NOT_TESTED",
    "REFUTED",
    "SUPPORTED",
    "Claim",
    "ClaimVerdict",
]

SUPPORTED, REFUTED, NOT_TESTED = "supported", "refuted", "not tested"


#: The strategies the documents' claims are about; any other is an experiment's own.
DOCUMENTED_STRATEGIES = frozenset(BUILTIN_STRATEGY_NAMES)

# Two claims each quote one row of a table, so the row is written once.
_TRANSFER_RANGE = "| **Final Accuracy** | Higher (85-95%) | Lower (80-90%) |"
_FORGETTING_ROW = "| Catastrophic Forgetting | Severe (>90% drop) | None |"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of a source document.

    Attributes:
        id: Short stable name.
        document: ``transfer`` or ``multitask``.
        statement: The claim as we test it.
        source: The document's sentence, quoted verbatim.
    """

    id: str
    document: str
    statement: str
    source: str


@dataclasses.dataclass(frozen=True)
class ClaimVerdict:
    """A claim's verdict on one experiment.

    Attributes:
        claim: The claim.
        verdict: ``supported``, ``refuted`` or ``not tested``.
        detail: One or two sentences with the numbers (or why it was not tested).
        numbers: The numbers behind the verdict (percent for metrics, points for gaps).
    """

    claim: Claim
    verdict: str
    detail: str
    numbers: dict[str, float]


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "progressive_gain",
        "transfer",
        "Progressive training ends 2-5 points more accurate than single-phase training.",
        "**Higher final accuracy** (typically 2-5% improvement)",
    ),
    Claim(
        "progressive_accuracy",
        "transfer",
        "Progressive training reaches 85-95% final accuracy.",
        _TRANSFER_RANGE,
    ),
    Claim(
        "single_phase_accuracy",
        "transfer",
        "Single-phase training reaches 80-90% final accuracy.",
        _TRANSFER_RANGE,
    ),
    Claim(
        "progressive_overfits_less",
        "transfer",
        "Progressive training ends with a smaller train-over-val accuracy gap.",
        "**Reduced overfitting** on small datasets",
    ),
    Claim(
        "progressive_more_stable",
        "transfer",
        "Progressive training's val/acc falls less from one epoch to the next.",
        "| **Training Stability** | Very Stable | Moderate |",
    ),
    Claim(
        "sequential_forgetting",
        "multitask",
        "Sequential training ends more than 90% below each earlier task's best metric.",
        _FORGETTING_ROW,
    ),
    Claim(
        "joint_no_forgetting",
        "multitask",
        "Joint training ends within 10% of every task's best metric.",
        "**No Catastrophic Forgetting**: Joint training prevented complete task failure",
    ),
    Claim(
        "ewc_ineffective",
        "multitask",
        "EWC does not reduce sequential training's forgetting.",
        "EWC was removed after proving ineffective",
    ),
    Claim(
        "joint_beats_sequential",
        "multitask",
        "Joint training ends with better task metrics than sequential training.",
        "| Final Performance | Failed completely | Partial success |",
    ),
    Claim(
        "loss_ratio_balanced",
        "multitask",
        "Loss-ratio task weights stay balanced (max/min <= 2) through the joint phase.",
        "**Stable Weights**: Task weights remained relatively balanced",
    ),
    Claim(
        "dynamic_weighting_helps",
        "multitask",
        "Loss-ratio weighting ends with better task metrics than equal weighting.",
        "**Dynamic Weighting Helps**: But needs better tuning",
    ),
    Claim(
        "task_losses_decrease",
        "multitask",
        "Every task's training loss ends lower than it started under joint training.",
        "**Loss Convergence**: All task losses decreased during training",
    ),
    Claim(
        "more_epochs_needed",
        "multitask",
        "Joint training is still improving when its plan ends.",
        "**More Training Needed**: 50 epochs insufficient for convergence",
    ),
    Claim(
        "fixed_lr_limits",
        "multitask",
        "A fixed learning rate ends with worse task metrics than a decaying one.",
        "**Learning Rate Critical**: Fixed rate limits performance",
    ),
    Claim(
        "reported_weights",
        "multitask",
        "The reported weights follow from w_i = (mean_j L_j / L_i)^0.5 and the final losses.",
        "- Task Weights: [0.89, 1.23, 0.92]",
    ),
)
