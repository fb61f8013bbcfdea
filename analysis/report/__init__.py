"""The experiment report: which strategy, why, and how sure.

One document is assembled as a list of blocks (headings, paragraphs, tables,
figures) and rendered twice: ``report.md``, which links the PNG files beside it,
and ``report.html``, which embeds them as data URIs so it can be mailed or
archived alone. Both go to ``<experiment>/report/``.

The package is laid out the way the report reads: ``_blocks`` is the document
model and its rendering, ``_context`` what every section reads, and one
``_sections_*`` module per topic (summary; ranking and claims; parameter
importance; training curves). Only :func:`write_report` and :class:`ReportFiles`
are public.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from analysis import plots
from analysis.ranking import rank_trials
from analysis.report._blocks import _Block, _Heading, _html, _Image, _markdown
from analysis.report._context import _Context
from analysis.report._sections_curves import _figures
from analysis.report._sections_importance import _importance
from analysis.report._sections_ranking import _claims, _ranking
from analysis.report._sections_summary import _summary
from analysis.results import load_results, trial_records
from analysis.targets import Target

if TYPE_CHECKING:
    from spaces import StrategySpace

__all__ = ["ReportFiles", "write_report"]


@dataclasses.dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    markdown: Path
    html: Path
    images: list[Path]


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
        spaces: Each strategy's parameter space (parameter importance needs the domains).
        num_groups: Layer groups of the backbone (the lr plot's groups).
        top: Rows of the ranking table.
        out_dir: Where to write instead of ``<dir>/report/`` (the experiment may be
            a URI; the report is written locally, then copied there).
    """
    # Deferred: the claims catalogue and its checks (and the trainables modules they
    # read) are needed only when a report is written, not when this package is imported.
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
