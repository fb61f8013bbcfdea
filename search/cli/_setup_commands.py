"""The commands that prepare an experiment before it is searched: ``strategy show``
prints a strategy to start a recipe from, ``pretrain`` fills the backbone cache that
``run`` would otherwise fill before starting Ray."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from search.cli._app import app, console, fail
from search.config import ConfigError, load_experiment

__all__ = ["pretrain", "strategy_app", "strategy_show"]

strategy_app = typer.Typer(help="Strategies in the experiment file's syntax.", no_args_is_help=True)
app.add_typer(strategy_app, name="strategy")


@strategy_app.command("show")
def strategy_show(
    name: Annotated[
        str, typer.Argument(help="A built-in (progressive, single_phase) or your own.")
    ],
    experiment: Annotated[
        Path | None,
        typer.Argument(help="Experiment YAML: where your own is defined, and the backbone."),
    ] = None,
) -> None:
    """Print a strategy as an experiment file writes it, to start a recipe of your own."""
    from search.strategy_show import StrategyNotShown, show_strategy

    try:
        config = load_experiment(experiment)
        text = show_strategy(name, config)
    except (ConfigError, StrategyNotShown) as error:
        raise fail(str(error)) from None
    typer.echo(text, nl=False)


@app.command()
def pretrain(
    experiment: Annotated[
        Path | None, typer.Argument(help="Experiment YAML whose backbone to pretrain.")
    ] = None,
) -> None:
    """Pretrain the experiment's backbone on the synthetic source task (cached)."""
    try:
        config = load_experiment(experiment)
    except ConfigError as error:
        raise fail(str(error)) from None
    from trainables.models import ensure_pretrained, pretrained_backbone_path

    spec = config.model_spec()
    if spec.pretrained is None:
        raise fail("model.pretrain.enabled: is false, so there is nothing to pretrain")
    cached = pretrained_backbone_path(spec).exists()
    logging.getLogger("trainables.models").setLevel(logging.INFO)
    path = ensure_pretrained(spec)
    console.print(f"{'cached' if cached else 'pretrained'} backbone: {path}")
