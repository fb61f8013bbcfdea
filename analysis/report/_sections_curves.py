"""The report's training-curves section: how each strategy's trials got where they did.

Every figure here follows the best trial of each strategy, the one the summary
names, so the reader can see the recipe behind the verdict.
"""

from __future__ import annotations

from analysis import plots
from analysis.recipes import plan_tasks
from analysis.report._blocks import _Block, _Heading, _Image
from analysis.report._context import _Context

__all__ = ["_figures"]


def _figures(context: _Context) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Training curves")]
    colors = context.colors
    best = {s: context.best_of(s) for s in context.strategies if not context.best_of(s).failed}
    best_ids = {s: item.record.trial_id for s, item in best.items()}
    metrics = [*context.metrics, *(["val/loss"] if "val/loss" not in context.metrics else [])]
    for strategy in context.strategies:
        trials = context.trials_of(strategy)
        plan = trials[0].record.phase_plan
        path = plots.learning_curves(
            context.image(f"curves_{strategy}"),
            strategy,
            context.curves,
            [item.record.trial_id for item in trials],
            best_ids.get(strategy),
            metrics,
            context.targets,
            color=colors[strategy],
            phase_names=[phase.name for phase in plan.phases] if plan is not None else [],
        )
        if path is not None:
            blocks.append(
                _Image(
                    path,
                    f"`{strategy}`: {', '.join(metrics)} per epoch; bold: its best trial,"
                    " dotted: that trial's phase boundaries, dashed: targets.",
                )
            )
    path = plots.lr_groups(context.image("lr_groups"), best_ids, context.curves, context.num_groups)
    if path is not None:
        blocks.append(
            _Image(
                path,
                f"Learning rate per layer group, best trial of each strategy (log scale; group"
                f" {context.num_groups} is the heads; a missing point is a frozen group).",
            )
        )
    multi = {s: item for s, item in best.items() if len(plan_tasks(item.record.phase_plan)) > 1}
    path = plots.task_weights(
        context.image("task_weights"), {s: best_ids[s] for s in multi}, context.curves
    )
    if path is not None:
        blocks.append(_Image(path, "Task loss weights, best trial of each multi-task strategy."))
    tasks = list(
        dict.fromkeys(t for item in multi.values() for t in plan_tasks(item.record.phase_plan))
    )
    path = plots.forgetting_bars(
        context.image("forgetting"),
        {s: item.record for s, item in multi.items()},
        tasks,
        colors,
    )
    if path is not None:
        blocks.append(
            _Image(
                path,
                "Forgetting per task at the end of training: how far each task fell below its"
                " own best epoch, best trial of each multi-task strategy.",
            )
        )
    return blocks
