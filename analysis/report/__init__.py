"""The experiment report: which strategy, why, and how sure.

One document is assembled as a list of blocks (headings, paragraphs, tables,
figures) and rendered twice: ``report.md``, which links the PNG files beside it,
and ``report.html``, which embeds them as data URIs so it can be mailed or
archived alone. Both go to ``<experiment>/report/``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis import plots
from analysis.ranking import RAN_PLAN, RankedTrial, TrialRecord, rank_trials
from analysis.recipes import plan_summary, plan_tasks
from analysis.results import load_results, trial_records
from analysis.targets import Target

if TYPE_CHECKING:
    from spaces import StrategySpace

__all__ = ["ReportFiles", "write_report"]

#: Evaluator whose ranking picks the parameters plotted against target_score.
SCATTER_EVALUATOR = "fanova"
SCATTER_PARAMS = 3
IMPORTANCE_ROWS = 10


@dataclasses.dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    markdown: Path
    html: Path
    images: list[Path]


# -- the document model --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclasses.dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclasses.dataclass(frozen=True)
class _Bullets:
    items: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class _Image:
    path: Path
    caption: str


_Block = _Heading | _Paragraph | _Bullets | _Table | _Image


# -- entry point ---------------------------------------------------------------


def write_report(
    experiment_dir: str | Path,
    *,
    name: str,
    targets: Sequence[Target],
    spaces: Mapping[str, StrategySpace],
    num_groups: int,
    top: int = 10,
    out_dir: str | Path | None = None,
) -> ReportFiles:
    """Write ``report.md``, ``report.html`` and their PNG figures to ``<dir>/report/``.

    Args:
        experiment_dir: A directory ``phasetune run`` wrote.
        name: The experiment's name, for the title.
        targets: What the trials are ranked against.
        spaces: Each strategy's search space (parameter importance needs the domains).
        num_groups: Layer groups of the backbone (the lr plot's groups).
        top: Rows of the ranking table.
        out_dir: Where to write instead of ``<dir>/report/`` (the experiment may be
            a URI; the report is written locally, then copied there).
    """
    from analysis.claims import check_claims

    # Kept as text: pathlib would fold a URI's "s3://" into "s3:/".
    directory = str(experiment_dir)
    chosen = tuple(targets)
    tables = load_results(directory)
    records = trial_records(tables.trials)
    ranked = rank_trials(records, chosen)
    out = Path(out_dir) if out_dir is not None else Path(directory) / "report"
    out.mkdir(parents=True, exist_ok=True)
    # A figure that no longer applies (a strategy since removed, a metric no longer
    # targeted) must not linger beside the new report.
    for stale in out.glob("*.png"):
        stale.unlink()

    context = _Context(
        name=name,
        directory=directory,
        out=out,
        targets=chosen,
        ranked=ranked,
        curves=plots.curves_by_trial(tables.epochs),
        num_groups=num_groups,
    )
    blocks: list[_Block] = [_Heading(1, f"phasetune report: {name}")]
    blocks += _summary(context)
    blocks += _ranking(context, top)
    blocks += _claims(check_claims(records, tables.epochs))
    blocks += _importance(context, spaces)
    blocks += _figures(context)

    markdown, page = out / "report.md", out / "report.html"
    markdown.write_text(_markdown(blocks), encoding="utf-8")
    page.write_text(_html(blocks, f"phasetune report: {name}"), encoding="utf-8")
    images = [block.path for block in blocks if isinstance(block, _Image)]
    return ReportFiles(markdown=markdown, html=page, images=images)


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every section reads: the ranked trials, their curves, where figures go."""

    name: str
    directory: str
    out: Path
    targets: tuple[Target, ...]
    ranked: list[RankedTrial]
    curves: plots.Curves
    num_groups: int

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(target.metric for target in self.targets))

    @property
    def multi_metric(self) -> bool:
        return len(self.metrics) > 1

    @property
    def strategies(self) -> list[str]:
        """Strategies in the order of their best trial's rank."""
        return list(dict.fromkeys(item.record.strategy for item in self.ranked))

    def best_of(self, strategy: str) -> RankedTrial:
        return next(item for item in self.ranked if item.record.strategy == strategy)

    def trials_of(self, strategy: str) -> list[RankedTrial]:
        return [item for item in self.ranked if item.record.strategy == strategy]

    @property
    def colors(self) -> dict[str, str]:
        return plots.strategy_colors(self.strategies)

    def image(self, name: str) -> Path:
        return self.out / f"{_slug(name)}.png"


# -- sections ------------------------------------------------------------------


def _summary(context: _Context) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Summary")]
    usable = [item for item in context.ranked if not item.failed]
    counts: dict[str, int] = {}
    for item in context.ranked:
        counts[item.record.status] = counts.get(item.record.status, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
    blocks.append(
        _Paragraph(
            f"Experiment `{context.name}` in `{context.directory}`: {len(context.ranked)}"
            f" trials ({states}), {len(context.strategies)} strategies"
            f" ({', '.join(f'`{s}`' for s in context.strategies) or 'none'})."
        )
    )
    blocks.append(_targets_table(context.targets))
    if not usable:
        blocks.append(_Paragraph("No trial finished an epoch with finite metrics: no verdict."))
        return blocks
    best = usable[0]
    record = best.record
    missed = len(context.targets) - best.targets_met
    blocks.append(
        _Paragraph(
            f"**Which strategy: `{record.strategy}`.** Its trial `{record.trial_id}` ranks first:"
            f" {best.targets_met} of {len(context.targets)} targets met, target_score"
            f" {_num(best.target_score)}, {record.epochs} epochs ({_recipe(record.plan)})."
            + (f" No trial meets every target; the best misses {missed}." if missed else "")
        )
    )
    blocks.append(_Paragraph("**Why:**"))
    blocks.append(_Bullets(tuple(_why(context, best))))
    blocks.append(_Paragraph("**How sure:**"))
    blocks.append(_Bullets(tuple(_how_sure(context, best))))
    blocks.append(_Heading(3, "Best trial of each strategy"))
    blocks.append(_best_per_strategy(context))
    return blocks


def _targets_table(targets: Sequence[Target]) -> _Table:
    return _Table(
        ("target", "threshold", "source"),
        tuple(
            (
                f"`{t.metric}`",
                f"{'>=' if t.direction == 'max' else '<='} {t.threshold:g}"
                + (" (assumed)" if t.assumed else ""),
                _quote(t.source),
            )
            for t in targets
        ),
    )


def _why(context: _Context, best: RankedTrial) -> list[str]:
    lines = []
    for target in context.targets:
        value = best.record.metrics.get(target.metric)
        if not _finite(value):
            lines.append(f"`{target.metric}` was not reported: the target counts as missed.")
            continue
        gap = abs(value - target.threshold)
        verdict = "met" if target.met(value) else f"missed by {_num(gap)}"
        lines.append(
            f"`{target.metric}` {_num(value)} against"
            f" {'>=' if target.direction == 'max' else '<='} {target.threshold:g}: {verdict}."
        )
    for strategy in context.strategies:
        if strategy == best.record.strategy:
            continue
        other = context.best_of(strategy)
        if other.failed:
            lines.append(f"Every `{strategy}` trial failed.")
            continue
        lines.append(
            f"`{strategy}`'s best trial `{other.record.trial_id}` meets {other.targets_met}"
            f" of {len(context.targets)} targets with target_score {_num(other.target_score)}"
            f" ({_num(best.target_score - other.target_score)} lower) in"
            f" {other.record.epochs} epochs against {best.record.epochs}."
        )
    lines.append("The claims check below compares the strategies the way the source documents do.")
    return lines


def _how_sure(context: _Context, best: RankedTrial) -> list[str]:
    lines = []
    for strategy in context.strategies:
        trials = context.trials_of(strategy)
        scores = _finished_scores(trials)
        states = ", ".join(
            f"{sum(item.record.status == state for item in trials)} {state}"
            for state in dict.fromkeys(item.record.status for item in trials)
        )
        spread = (
            f"; finished trials' target_score median {_num(statistics.median(scores))},"
            f" range {_num(min(scores))} to {_num(max(scores))}"
            if scores
            else "; none finished its plan"
        )
        lines.append(f"`{strategy}`: {len(trials)} trials ({states}){spread}.")
    winner = best.record.strategy
    # Scheduler-stopped trials score an unfinished model: as a spread they would
    # measure the scheduler, not how much a finished recipe's score varies.
    mine = _finished_scores(context.trials_of(winner))
    for strategy in context.strategies:
        other = context.best_of(strategy)
        if strategy == winner or other.failed or not mine:
            continue
        above = sum(score > other.target_score for score in mine)
        lines.append(
            f"{above} of {len(mine)} finished `{winner}` trials score above the best"
            f" `{strategy}` trial."
        )
        margin = best.target_score - other.target_score
        if len(mine) >= 3:
            spread = statistics.stdev(mine)
            judged = "larger" if margin > spread else "not larger"
            lines.append(
                f"The margin over `{strategy}` ({_num(margin)}) is {judged} than the spread of"
                f" finished `{winner}` trials' scores (standard deviation {_num(spread)})."
            )
        else:
            lines.append(
                f"Fewer than 3 finished `{winner}` trials: too few to tell the margin over"
                f" `{strategy}` from the spread between configurations."
            )
    lines.append(
        "Each configuration ran once, so the spread between trials of a strategy is the only"
        " estimate of noise here."
    )
    return lines


def _best_per_strategy(context: _Context) -> _Table:
    rows = []
    for strategy in context.strategies:
        item = context.best_of(strategy)
        scores = _finished_scores(context.trials_of(strategy))
        rows.append(
            (
                f"`{strategy}`",
                f"`{item.record.trial_id}`",
                _recipe(item.record.plan),
                *(_num(item.record.metrics.get(m)) for m in context.metrics),
                f"{item.targets_met}/{len(context.targets)}",
                _num(item.target_score),
                _num(statistics.median(scores)) if scores else "-",
                f"{len(scores)}/{len(context.trials_of(strategy))}",
                str(item.record.epochs),
            )
        )
    return _Table(
        (
            "strategy",
            "best trial",
            "recipe",
            *context.metrics,
            "targets met",
            "target_score",
            "median (finished)",
            "finished trials",
            "epochs",
        ),
        tuple(rows),
    )


def _ranking(context: _Context, top: int) -> list[_Block]:
    shown = min(top, len(context.ranked))
    blocks: list[_Block] = [_Heading(2, f"Ranking (top {shown})" if shown else "Ranking")]
    if not context.ranked:
        return [*blocks, _Paragraph("No trial has reported yet.")]
    front: frozenset[str] = frozenset()
    if context.multi_metric:
        from analysis.pareto import pareto_front

        front = pareto_front(_records(context.ranked), context.targets)
    blocks.append(
        _Paragraph(
            "Ordered by targets met, then target_score, then fewer epochs; metrics are the"
            " final epoch's."
            + (
                f" ★ marks the {len(front)} trials on the Pareto front of the per-task"
                " metrics (no other trial is at least as good on every target metric and"
                " better on one)."
                if context.multi_metric
                else ""
            )
        )
    )
    rows = []
    for item in context.ranked[:top]:
        record = item.record
        status = f"failed: {record.error}" if record.error else record.status
        rows.append(
            (
                str(item.rank),
                f"`{record.trial_id}`",
                record.strategy,
                _recipe(record.plan),
                *(_num(record.metrics.get(m)) for m in context.metrics),
                f"{item.targets_met}/{len(context.targets)}",
                _num(item.target_score),
                str(record.epochs),
                status,
                *(["★" if record.trial_id in front else ""] if context.multi_metric else []),
            )
        )
    headers = (
        "#",
        "trial",
        "strategy",
        "recipe",
        *context.metrics,
        "targets",
        "target_score",
        "epochs",
        "status",
        *(["Pareto"] if context.multi_metric else []),
    )
    blocks.append(_Table(headers, tuple(rows)))
    if context.multi_metric:
        path = plots.pareto_pairs(
            context.image("pareto"),
            _records(context.ranked),
            context.targets,
            front,
            context.colors,
        )
        if path is not None:
            blocks.append(
                _Image(path, "Per-task metrics of every trial, pairwise; ringed: Pareto front.")
            )
    return blocks


def _claims(verdicts: Sequence[Any]) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Claims of the source documents")]
    if not verdicts:
        return [*blocks, _Paragraph("No claim of the source documents concerns these trials.")]
    counts: dict[str, int] = {}
    for verdict in verdicts:
        counts[verdict.verdict] = counts.get(verdict.verdict, 0) + 1
    blocks.append(_Paragraph(", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + "."))
    rows = tuple(
        (
            f"**{v.claim.id}**: {v.claim.statement}",
            f"**{v.verdict}**",
            v.detail,
            f"{_quote(v.claim.source)} ({v.claim.document})",
        )
        for v in verdicts
    )
    blocks.append(_Table(("claim", "verdict", "detail", "source"), rows))
    return blocks


def _importance(context: _Context, spaces: Mapping[str, StrategySpace]) -> list[_Block]:
    from analysis.importance import parameter_importance

    blocks: list[_Block] = [_Heading(2, "Parameter importance")]
    results = parameter_importance(_records(context.ranked), context.targets, spaces)
    blocks.append(
        _Paragraph(
            "How much of each strategy's target_score variation each parameter explains"
            " (fANOVA and PED-ANOVA, from the trials of that strategy alone)."
        )
    )
    by_strategy: dict[str, list[Any]] = {}
    for result in results:
        by_strategy.setdefault(result.strategy, []).append(result)
    scores = {item.record.trial_id: item.target_score for item in context.ranked}
    for strategy, found in by_strategy.items():
        blocks.append(_Heading(3, f"`{strategy}`"))
        values = {r.evaluator: dict(r.importances) for r in found if r.importances}
        # Evaluators that could not run usually share one reason; say it once.
        notes = dict.fromkeys(r.note for r in found if r.note)
        for note in notes:
            names = ", ".join(r.evaluator for r in found if r.note == note)
            blocks.append(_Paragraph(f"No importance ({names}): {note}."))
        if values:
            params = list(dict.fromkeys(p for v in values.values() for p in v))
            rows = tuple(
                (f"`{p}`", *(_num(v.get(p)) for v in values.values()))
                for p in params[:IMPORTANCE_ROWS]
            )
            blocks.append(_Table(("parameter", *values), rows))
            path = plots.importance_bars(context.image(f"importance_{strategy}"), strategy, values)
            if path is not None:
                blocks.append(_Image(path, f"Parameter importance of `{strategy}`."))
        params, how = _scatter_params(values, context.trials_of(strategy))
        trials = _records(context.trials_of(strategy))
        best = context.best_of(strategy) if trials else None
        path = plots.metric_vs_params(
            context.image(f"score_vs_params_{strategy}"),
            strategy,
            trials,
            scores,
            params,
            best.record.trial_id if best and not best.failed else None,
            color=context.colors.get(strategy, "tab:blue"),
            chosen_by=how,
        )
        if path is not None:
            blocks.append(_Image(path, f"target_score of each `{strategy}` trial vs {how}."))
    if not by_strategy:
        blocks.append(_Paragraph("No strategy had trials to analyse."))
    return blocks


def _scatter_params(
    values: Mapping[str, Mapping[str, float]], trials: Sequence[RankedTrial]
) -> tuple[list[str], str]:
    """The parameters to plot target_score against, and how they were chosen."""
    for evaluator in (SCATTER_EVALUATOR, *values):
        if values.get(evaluator):
            chosen = list(values[evaluator])[:SCATTER_PARAMS]
            return chosen, f"its {len(chosen)} most important parameters ({evaluator})"
    # Without an importance estimate the parameters that vary are still worth a look.
    varying = []
    for name in dict.fromkeys(p for item in trials for p in item.record.params):
        seen = {repr(item.record.params.get(name)) for item in trials}
        if len(seen) > 1:
            varying.append(name)
    chosen = varying[:SCATTER_PARAMS]
    return chosen, "parameters that vary between its trials (no importance estimate)"


def _figures(context: _Context) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Training curves")]
    colors = context.colors
    best = {s: context.best_of(s) for s in context.strategies if not context.best_of(s).failed}
    best_ids = {s: item.record.trial_id for s, item in best.items()}
    metrics = [*context.metrics, *(["val/loss"] if "val/loss" not in context.metrics else [])]
    for strategy in context.strategies:
        trials = context.trials_of(strategy)
        plan = trials[0].record.plan or {}
        path = plots.learning_curves(
            context.image(f"curves_{strategy}"),
            strategy,
            context.curves,
            [item.record.trial_id for item in trials],
            best_ids.get(strategy),
            metrics,
            context.targets,
            color=colors[strategy],
            phase_names=[phase.get("name", "") for phase in plan.get("phases", [])],
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
    multi = {s: item for s, item in best.items() if len(plan_tasks(item.record.plan)) > 1}
    path = plots.task_weights(
        context.image("task_weights"), {s: best_ids[s] for s in multi}, context.curves
    )
    if path is not None:
        blocks.append(_Image(path, "Task loss weights, best trial of each multi-task strategy."))
    tasks = list(dict.fromkeys(t for item in multi.values() for t in plan_tasks(item.record.plan)))
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


# -- rendering -----------------------------------------------------------------


def _markdown(blocks: Sequence[_Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, _Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, _Paragraph):
            parts.append(block.text)
        elif isinstance(block, _Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, _Table):
            lines = [
                _md_row(block.headers),
                _md_row(tuple("---" for _ in block.headers)),
                *(_md_row(row) for row in block.rows),
            ]
            parts.append("\n".join(lines))
        else:
            parts.append(f"![{_plain(block.caption)}]({block.path.name})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md_cell(cell) for cell in cells) + " |"


def _md_cell(text: str) -> str:
    # A pipe inside a cell (the NSL source quotes a table row) would split the cell.
    return " ".join(text.split()).replace("|", "\\|")


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
"""


def _html(blocks: Sequence[_Block], title: str) -> str:
    body = []
    for block in blocks:
        if isinstance(block, _Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, _Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, _Bullets):
            items = "".join(f"<li>{_inline(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, _Table):
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in block.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(_plain(block.caption))}"'
                f' src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _plain(text: str) -> str:
    """Text without its inline markup, for image alt texts."""
    return re.sub(r"[`*\[\]]", "", " ".join(text.split()))


def _inline(text: str) -> str:
    """The Markdown this report uses inline (code spans, bold) as HTML."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


# -- small pieces --------------------------------------------------------------


def _recipe(plan: Mapping[str, Any] | None) -> str:
    return plan_summary(plan)


def _finished_scores(trials: Sequence[RankedTrial]) -> list[float]:
    """Scores of the trials that ran their whole plan (or stopped early by their own rule)."""
    return [
        item.target_score
        for item in trials
        if item.record.status in RAN_PLAN and math.isfinite(item.target_score)
    ]


def _quote(text: str) -> str:
    return f"“{text}”" if text else "-"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if value and abs(value) < 1e-2 else f"{value:.4f}"
    return str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _records(ranked: Sequence[RankedTrial]) -> list[TrialRecord]:
    return [item.record for item in ranked]
