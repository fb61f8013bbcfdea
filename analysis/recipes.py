"""A phase plan in one line, as the ranking table, the report and progress lines show it."""

from __future__ import annotations

from trainables.phases import PhasePlan

__all__ = ["plan_summary", "plan_tasks"]


def plan_tasks(plan: PhasePlan | None) -> list[str]:
    """The tasks a plan trains, in the order they first appear."""
    return [] if plan is None else list(plan.tasks)


def plan_summary(plan: PhasePlan | None) -> str:
    """A plan in one line.

    Single-task plans: epochs, lr and unfrozen groups per phase, batch size.
    Multi-task plans: each phase's name and epochs with what sets it apart
    (alternating tasks, the weighting method, EWC), then the lrs and batch size.
    """
    if plan is None:
        return "-"
    phases = plan.phases
    lrs = "/".join(f"{p.lr:.0e}" for p in phases)
    if all(tuple(p.tasks) == ("cls",) for p in phases):
        epochs = "+".join(str(p.epochs) for p in phases)
        trainable = "/".join(str(p.trainable) for p in phases)
        # Only a schedule other than the recipe's own (single-phase: plateau) is named.
        own = "plateau" if plan.strategy == "single_phase" else "constant"
        schedules = {p.lr_schedule.kind for p in phases} - {own}
        schedule = "".join(f", {kind}" for kind in sorted(schedules))
        return f"{epochs} ep, lr {lrs}{schedule}, train {trainable}, bs {plan.batch_size}"
    parts = []
    for phase in phases:
        part = f"{phase.name} {phase.epochs}"
        if phase.task_sampling == "alternate":
            part += " alt"
        elif len(phase.tasks) > 1:
            part += f" {phase.weighting.method}"
        if phase.ewc is not None:
            part += f" ewc {phase.ewc.strength:.0e}"
        if phase.lr_schedule.kind != "constant":
            part += f" {phase.lr_schedule.kind}"
        parts.append(part)
    if len(set(lrs.split("/"))) == 1:
        lrs = lrs.split("/")[0]
    extras = "".join(
        f", {label} {value:.2g}"
        for value, label in ((plan.label_smoothing, "smoothing"), (plan.focal_gamma, "focal"))
        if value
    )
    return f"{' > '.join(parts)}, lr {lrs}, bs {plan.batch_size}{extras}"
