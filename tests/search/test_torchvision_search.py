"""Searches with torchvision backbones end to end, on tiny images and the CPU.

Every test writes the network's state dict as its local weights file first (nothing is
ever downloaded), then runs a two-trial search to a ranking and a best.yaml. CI runs
them where torchvision is installed: ``PHASETUNE_REQUIRE_TORCHVISION=1 pytest -m
torchvision``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from analysis.export import load_best
from search.config import ExperimentConfig
from search.experiment import SearchOutcome, run_search
from trainables.phases import PhasePlan

pytestmark = [pytest.mark.slow, pytest.mark.torchvision]

#: 1+1+1 epochs: the document's 3+3+4 at a tenth, each phase at least one epoch.
TINY_EPOCH_SCALE = 0.1


def write_weights(path: Path, name: str) -> Path:
    """torchvision's ``name`` as built (seeded, untrained) saved as a state-dict file."""
    import torchvision.models

    torch.manual_seed(0)
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), path)
    return path


def write_image_folder(
    root: Path, classes: tuple[str, ...] = ("alpha", "bravo", "charlie"), per_class: int = 12
) -> Path:
    """Class folders of 48x36 PNGs (wider than tall, so a shorter-side resize crops):
    each class a different dominant colour under seeded noise."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.normal(90.0, 40.0, size=(36, 48, 3))
            pixels[..., index % 3] += 100.0
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(folder / f"img{i:02d}.png")
    return root


def search(root: Path, experiment: dict[str, Any]) -> SearchOutcome:
    """``experiment`` run to its ranking, with results under ``root``."""
    config = ExperimentConfig.model_validate({**experiment, "storage": {"path": str(root)}})
    return run_search(config)


def check_outcome(outcome: SearchOutcome, backbone: str, weights: Path, trials: int) -> dict:
    """Every trial trained its whole 1+1+1 plan; best.yaml names the backbone and its
    weights and holds the best trial's metrics. Returns best.yaml's document."""
    assert len(outcome.ranked) == trials
    for item in outcome.ranked:
        assert item.record.status == "done", item.record
        assert item.record.strategy == "progressive"
        assert item.record.epochs == 3
        assert 0.0 <= item.record.metrics["val/acc"] <= 1.0
        assert math.isfinite(item.record.metrics["val/loss"])
    assert outcome.best_yaml.is_file()
    best = yaml.safe_load(outcome.best_yaml.read_text())
    assert best["trial_id"] == outcome.ranked[0].record.trial_id
    assert best["metrics"]["val/acc"] == pytest.approx(outcome.ranked[0].record.metrics["val/acc"])
    plan = PhasePlan.from_dict(best["plan"])
    assert plan.model.backbone == backbone
    assert plan.model.weights == str(weights)
    # The weights file replaced the synthetic pretraining, and its ImageNet-style
    # statistics are what the inputs are normalised with.
    assert plan.model.pretrained is None
    assert plan.data.normalize == "imagenet"
    assert [phase.epochs for phase in plan.phases] == [1, 1, 1]
    assert plan.phases[0].trainable == "none" and plan.phases[-1].trainable == "all"
    assert load_best(outcome.best_yaml).plan == plan
    return best


#: Two trials of 1+1+1 epochs, nothing stopped early.
TINY_SEARCH = {"num_samples": 2, "epoch_scale": TINY_EPOCH_SCALE, "scheduler": "fifo", "seed": 0}


def test_a_mobilenet_v2_search_on_synthetic_signs(ray_session, tmp_path):
    weights = write_weights(tmp_path / "mobilenet_v2.pt", "mobilenet_v2")
    outcome = search(
        tmp_path / "results",
        {
            "name": "tv-mobilenet-v2",
            "dataset": {"num_samples": 120, "image_size": 32, "num_classes": 4},
            "model": {"backbone": "torchvision:mobilenet_v2", "weights": str(weights)},
            "strategies": {"progressive": {}},
            "search": TINY_SEARCH,
        },
    )
    best = check_outcome(outcome, "torchvision:mobilenet_v2", weights, trials=2)
    # 19 feature blocks in the default 6 groups; the baseline trains the top quarter
    # (2 groups) in phase 2.
    plan = PhasePlan.from_dict(best["plan"])
    assert plan.model.num_groups == 6
    baseline = next(i for i in outcome.ranked if i.record.params.get("base_lr") == 1e-3)
    assert baseline.record.plan["phases"][1]["trainable"] == 2


def test_a_resnet18_search_on_an_image_folder(ray_session, tmp_path):
    weights = write_weights(tmp_path / "resnet18.pt", "resnet18")
    data = write_image_folder(tmp_path / "signs")
    outcome = search(
        tmp_path / "results",
        {
            "name": "tv-resnet18",
            "dataset": {
                "kind": "image_folder",
                "path": str(data),
                "image_size": 32,
                "resize": "shorter_side",
                "crop_scale": 0.8,
            },
            "model": {"backbone": "torchvision:resnet18", "weights": str(weights)},
            "strategies": {"progressive": {}},
            "search": TINY_SEARCH,
        },
    )
    best = check_outcome(outcome, "torchvision:resnet18", weights, trials=2)
    plan = PhasePlan.from_dict(best["plan"])
    # A ResNet's stem and layer1-4: 5 blocks, so 5 groups.
    assert plan.model.num_groups == 5
    assert plan.data.path == str(data) and plan.data.resize == "shorter_side"
