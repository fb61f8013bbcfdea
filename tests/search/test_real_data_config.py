"""Experiment files that read data from disk: good ones load, mistakes are one line, exit 2."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from search.cli import app
from search.config import ExperimentConfig, load_experiment
from tests.trainables.test_real_data import make_folder, make_parquet


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Class folders under data/signs, a multi-task table and a labels-only one under data/."""
    root = tmp_path / "data"
    make_folder(root / "signs")
    make_parquet(root / "scenes.parquet")
    table = pq.read_table(root / "scenes.parquet").drop_columns(["mask", "boxes"])
    pq.write_table(table, root / "labels.parquet")
    make_folder(root / "one_class", classes=("alpha",))
    pq.write_table(table.filter(pc.equal(table["label"], 0)), root / "one_label.parquet")
    return root


BAD_DATASETS = [
    ("{kind: image_folder}", "dataset: dataset.path: image_folder data need one"),
    ("{kind: parquet}", "dataset.path: parquet data need one; give a Parquet file"),
    ("{kind: image_folder, path: DATA/nowhere}", "dataset.path: DATA/nowhere does not exist"),
    (
        "{kind: image_folder, path: DATA/signs, num_classes: 5}",
        "dataset.num_classes: is 5 but the data has 3 class folders (alpha, bravo, charlie);"
        " set it to 3 or leave it out",
    ),
    (
        "{kind: image_folder, path: DATA/signs, mask_column: seg}",
        "dataset.mask_column: only parquet data have columns",
    ),
    ("{path: DATA/signs}", "dataset.path: synthetic_signs data are made on the fly"),
    (
        "{kind: parquet, path: DATA/scenes.parquet, mask_column: seg}",
        "dataset.mask_column: no column 'seg' in DATA/scenes.parquet",
    ),
    (
        "{kind: parquet, path: DATA/scenes.parquet, label_column: sign}",
        "dataset.label_column: no column 'sign'",
    ),
    (
        "{kind: parquet, path: DATA/scenes.parquet, num_classes: 1}",
        "dataset.num_classes: Input should be greater than or equal to 2",
    ),
    (
        "{kind: image_folder, path: DATA/signs, on_corrupt: ignore}",
        "dataset.on_corrupt: Input should be 'error' or 'skip'",
    ),
    ("{kind: image_folder, path: DATA/signs, crop_scale: 0}", "dataset.crop_scale"),
    (
        "{kind: parquet, path: DATA/labels.parquet}\nstrategies: {joint: {}}",
        "strategies.joint: needs tasks that the parquet data set lacks (it has only cls);"
        " add mask and boxes columns",
    ),
    (
        "{kind: parquet, path: DATA/scenes.parquet, image_size: 30}\nstrategies: {joint: {}}",
        "dataset: parquet needs an image_size that is a multiple of 4",
    ),
    (
        "{kind: image_folder, path: DATA/one_class}",
        "dataset.path: DATA/one_class has one class folder (alpha); a classifier needs at"
        " least two",
    ),
    (
        "{kind: parquet, path: DATA/one_label.parquet}",
        "dataset.label_column: 'label' in DATA/one_label.parquet holds one class only",
    ),
    ("{resize: shorter_side}", "dataset.resize: synthetic_signs data are rendered at image_size"),
    (
        "{kind: image_folder, path: DATA/signs, normalize: zscore}",
        "dataset.normalize: Input should be 'data' or 'imagenet'",
    ),
    (
        "{kind: image_folder, path: DATA/signs, resize: crop}",
        "dataset.resize: Input should be 'squash' or 'shorter_side'",
    ),
]


def _run(tmp_path: Path, text: str) -> tuple[int, list[str]]:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["run", str(path), "--results-dir", str(tmp_path / "out")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    return result.exit_code, lines


@pytest.mark.parametrize(
    ("dataset", "message"), BAD_DATASETS, ids=[m[:40] for _, m in BAD_DATASETS]
)
def test_bad_dataset_exits_2_with_one_line(tmp_path, data, dataset, message):
    text = "dataset: " + dataset.replace("DATA", str(data)) + "\n"
    code, lines = _run(tmp_path, text)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert message.replace("DATA", str(data)) in lines[0], lines[0]


def test_corrupt_image_stops_the_run_before_ray_with_one_line(tmp_path, data):
    bad = data / "signs" / "bravo" / "img03.jpg"
    bad.write_bytes(bad.read_bytes()[:25])
    code, lines = _run(tmp_path, f"dataset: {{kind: image_folder, path: {data / 'signs'}}}\n")
    assert code == 2
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]]
    assert f"dataset.path: cannot read {bad}" in errors[0]
    assert "dataset.on_corrupt: skip" in errors[0]


def test_image_folder_infers_classes_and_resolves_a_relative_path(tmp_path, data, monkeypatch):
    monkeypatch.chdir(data)
    path = tmp_path / "experiment.yaml"
    path.write_text("dataset: {kind: image_folder, path: signs, hflip: true}\n")
    config = load_experiment(path)
    spec = config.data_spec()
    assert spec.path == str(data / "signs")
    assert spec.num_classes is None and spec.tasks == ("cls",) and spec.hflip
    # The saved experiment file, read back from elsewhere, validates the same.
    monkeypatch.chdir(tmp_path)
    again = ExperimentConfig.model_validate(yaml.safe_load(yaml.safe_dump(config.model_dump())))
    assert again == config


def test_parquet_tasks_follow_its_columns(tmp_path, data):
    path = tmp_path / "experiment.yaml"
    path.write_text(
        f"dataset: {{kind: parquet, path: {data / 'scenes.parquet'}, image_size: 16}}\n"
        "strategies: {joint: {}}\ntargets: multitask\n"
    )
    spec = load_experiment(path).data_spec()
    assert spec.tasks == ("cls", "seg", "det")
    assert (spec.mask_column, spec.boxes_column) == ("mask", "boxes")
    path.write_text(f"dataset: {{kind: parquet, path: {data / 'labels.parquet'}}}\n")
    spec = load_experiment(path).data_spec()
    assert spec.tasks == ("cls",) and spec.mask_column is None


def test_train_on_data_that_broke_since_the_search_is_one_line(tmp_path, data):
    """``phasetune train`` checks the best config's data before it writes anything."""
    from tests.conftest import TINY_PROGRESSIVE, write_best
    from trainables.strategies import build_plan

    path = tmp_path / "experiment.yaml"
    path.write_text(f"dataset: {{kind: image_folder, path: {data / 'signs'}}}\n")
    context = load_experiment(path).plan_context()
    plan = build_plan("progressive", TINY_PROGRESSIVE, context)
    best = tmp_path / "best.yaml"
    write_best(best, plan)
    bad = data / "signs" / "alpha" / "img01.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "retrain"
    result = CliRunner().invoke(app, ["train", str(best), "--output", str(out)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert lines == [lines[0]] and lines[0].startswith("error: ")
    assert f"dataset.path: cannot read {bad}" in lines[0]
    assert not out.exists()


def test_a_decode_that_would_not_fit_the_cache_disk_is_one_line(tmp_path, data, monkeypatch):
    from trainables.data import _store

    free = shutil.disk_usage(tmp_path)._replace(free=10 * 2**20)
    monkeypatch.setattr(_store.shutil, "disk_usage", lambda folder: free)
    code, lines = _run(tmp_path, f"dataset: {{kind: image_folder, path: {data / 'signs'}}}\n")
    assert code == 2, lines
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]]
    cache = Path(os.environ["PHASETUNE_CACHE_DIR"]) / "data"
    assert f"dataset: decoding needs 0.06 GiB free in {cache}, which has 0.01 GiB" in errors[0]
    assert not [name for name in os.listdir(cache) if name.startswith("image_folder-")]


def test_defaults_follow_the_backbone_and_pretraining_stays_small(tmp_path, data):
    import torch

    from trainables.models import build_backbone

    path = tmp_path / "experiment.yaml"
    folder = f"dataset: {{kind: image_folder, path: {data / 'signs'}, image_size: 128}}\n"
    path.write_text(folder)
    config = load_experiment(path)
    assert config.data_spec().normalize == "data"  # small_cnn pretrained here, on its data
    assert config.data_spec().resize == "squash"
    assert config.model_spec().pretrained.data.image_size == 64

    weights = tmp_path / "small_cnn.pt"
    torch.save(build_backbone(config.model_spec(), load_weights_file=False).state_dict(), weights)
    path.write_text(folder + f"model: {{weights: {weights}}}\n")
    assert load_experiment(path).data_spec().normalize == "imagenet"  # weights from elsewhere

    assert load_experiment(path).model_spec().pretrained is None  # weights replace pretraining

    path.write_text(
        folder.replace("128}", "128, normalize: imagenet, resize: shorter_side}")
        + "model: {pretrain: {image_size: 32}}\n"
    )
    config = load_experiment(path)
    spec = config.data_spec()
    assert (spec.normalize, spec.resize) == ("imagenet", "shorter_side")
    assert config.model_spec().pretrained.data.image_size == 32
