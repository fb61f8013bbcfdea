"""Command-line behaviour that the other tests do not reach."""

from __future__ import annotations

from typer.testing import CliRunner

from search.cli import app


def test_pretrain_caches_the_backbone_once(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(
        "dataset: {image_size: 16}\n"
        "model: {width: 4, pretrain: {num_samples: 300, num_classes: 5, epochs: 1}}\n"
    )
    first = CliRunner().invoke(app, ["pretrain", str(path)])
    assert first.exit_code == 0, first.output
    assert "pretrained backbone:" in first.output
    second = CliRunner().invoke(app, ["pretrain", str(path)])
    assert "cached backbone:" in second.output
    assert first.output.split(":", 1)[1].strip() == second.output.split(":", 1)[1].strip()


def test_pretrain_disabled_is_a_user_error(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("model: {pretrain: {enabled: false}}\n")
    result = CliRunner().invoke(app, ["pretrain", str(path)])
    assert result.exit_code == 2
    assert "model.pretrain.enabled" in result.output


def test_help_lists_the_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "train", "pretrain"):
        assert command in result.output
