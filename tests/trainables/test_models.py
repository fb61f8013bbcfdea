"""Backbone layer groups and the cached pretrained backbone."""

from __future__ import annotations

import torch

from tests.conftest import TINY_CONTEXT
from trainables.models import SmallCNN, build_model, ensure_pretrained, pretrained_backbone_path


def test_backbone_exposes_ordered_groups_with_batchnorm():
    backbone = SmallCNN(width=8, num_groups=6)
    assert len(backbone.layer_groups) == 6
    assert all(
        any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules()) for g in backbone.layer_groups
    )
    features = backbone(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, backbone.out_features) == (2, 32)


def test_pretraining_is_cached_and_loaded_into_the_model():
    spec = TINY_CONTEXT.model
    path = ensure_pretrained(spec)
    assert path == pretrained_backbone_path(spec) and path.exists()
    stamp = path.stat().st_mtime_ns
    assert ensure_pretrained(spec).stat().st_mtime_ns == stamp  # second call: cache hit
    cached = torch.load(path, weights_only=True)
    model = build_model(spec, num_classes=6)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in cached.items())
    fresh = build_model(spec, num_classes=6, load_pretrained=False)
    assert not all(torch.equal(fresh.backbone.state_dict()[k], v) for k, v in cached.items())


def test_a_run_that_pretrains_draws_the_same_heads_as_one_that_finds_the_cache(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PHASETUNE_CACHE_DIR", str(tmp_path))
    spec = TINY_CONTEXT.model
    torch.manual_seed(0)
    pretraining = build_model(spec, num_classes=6, tasks=("cls", "seg", "det")).state_dict()
    torch.manual_seed(0)
    cached = build_model(spec, num_classes=6, tasks=("cls", "seg", "det")).state_dict()
    assert all(torch.equal(pretraining[k], cached[k]) for k in cached)


def test_multi_task_model_has_a_head_per_task_on_the_shared_backbone():
    model = build_model(TINY_CONTEXT.model, 4, ("seg", "det", "cls"), load_pretrained=False)
    outputs = model(torch.randn(2, 3, 16, 16))
    assert outputs["cls"].shape == (2, 4)
    assert outputs["seg"].shape == (2, 5, 16, 16)
    assert outputs["det"].shape == (2, 4 + 4, 4, 4)
    assert list(model(torch.randn(2, 3, 16, 16), ("det",))) == ["det"]
