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
