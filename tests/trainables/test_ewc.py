"""Elastic weight consolidation: the Fisher estimate and the penalty, on tiny modules."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from trainables.ewc import TaskAnchor, estimate_fisher, ewc_penalty


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def _batches(count: int, seed: int = 0) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(4, 3, generator=generator), {"y": torch.randn(4, 2, generator=generator)})
        for _ in range(count)
    ]


def _mse(module: nn.Module):
    def loss_fn(images: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((module(images) - targets["y"]) ** 2).mean()

    return loss_fn


def _anchor(module: nn.Module, fisher_value: float = 1.0, task: str = "cls") -> TaskAnchor:
    params = dict(module.named_parameters())
    return TaskAnchor(
        task=task,
        weights={name: p.detach().clone() for name, p in params.items()},
        fisher={name: torch.full_like(p, fisher_value) for name, p in params.items()},
    )


def _penalty(module: nn.Module, anchors: list[TaskAnchor], strength: float) -> float:
    return ewc_penalty(module, anchors, strength).detach().item()


def _shift(module: nn.Module, by: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(by)


# -- the Fisher estimate ---------------------------------------------------------------


def test_fisher_is_the_mean_of_squared_batch_gradients():
    module = _linear()
    batches = _batches(3)
    # By hand: one backward pass per batch, squared, averaged over the batches.
    expected = {name: torch.zeros_like(p) for name, p in module.named_parameters()}
    for images, targets in batches:
        module.zero_grad()
        _mse(module)(images, targets).backward()
        for name, p in module.named_parameters():
            expected[name] += p.grad**2 / len(batches)
    module.zero_grad(set_to_none=True)

    anchor = estimate_fisher(module, "seg", batches, _mse(module))
    assert anchor.task == "seg"
    assert set(anchor.fisher) == {"weight", "bias"} == set(anchor.weights)
    for name, value in expected.items():
        torch.testing.assert_close(anchor.fisher[name], value)
        assert (anchor.fisher[name] >= 0).all() and anchor.fisher[name].abs().sum() > 0


def test_fisher_of_a_linear_loss_is_the_mean_squared_input():
    # loss = sum(w * x): the gradient of w is x, so F = mean over batches of x**2.
    module = nn.Linear(2, 1, bias=False)
    xs = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])]
    anchor = estimate_fisher(
        module, "cls", [(x, {}) for x in xs], lambda images, _: module(images).sum()
    )
    torch.testing.assert_close(anchor.fisher["weight"], torch.tensor([[5.0, 2.5]]))


def test_fisher_covers_frozen_weights_and_leaves_the_module_as_it_was():
    module = _linear()
    module.weight.requires_grad_(False)  # frozen by the last phase
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    anchor = estimate_fisher(module, "cls", _batches(2), _mse(module))
    # The frozen weight still gets a Fisher: it describes the weights, not the phase.
    assert anchor.fisher["weight"].abs().sum() > 0
    assert module.weight.requires_grad is False and module.bias.requires_grad is True
    assert all(p.grad is None for p in module.parameters())
    for name, p in module.named_parameters():
        assert torch.equal(p, before[name])
        torch.testing.assert_close(anchor.weights[name], before[name], rtol=0, atol=0)


def test_anchor_weights_are_copies_not_views_of_the_module():
    module = _linear()
    anchor = estimate_fisher(module, "cls", _batches(1), _mse(module))
    kept = anchor.weights["weight"].clone()
    _shift(module, 1.0)
    assert torch.equal(anchor.weights["weight"], kept)
    assert not torch.equal(anchor.weights["weight"], module.weight.detach())


def test_a_parameter_the_loss_does_not_reach_has_zero_fisher():
    module = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    # The loss only passes through the first layer.
    anchor = estimate_fisher(module, "cls", _batches(2), lambda x, _: module[0](x).pow(2).mean())
    assert anchor.fisher["0.weight"].abs().sum() > 0
    assert torch.equal(anchor.fisher["1.weight"], torch.zeros(2, 2))
    assert torch.equal(anchor.fisher["1.bias"], torch.zeros(2))


def test_no_batches_give_a_zero_fisher_not_a_division_by_zero():
    module = _linear()
    anchor = estimate_fisher(module, "cls", [], _mse(module))
    assert all(torch.equal(f, torch.zeros_like(f)) for f in anchor.fisher.values())
    assert _penalty(module, [anchor], 1e6) == 0.0


def test_a_failing_loss_still_restores_the_frozen_flags():
    module = _linear()
    module.bias.requires_grad_(False)

    def broken(images, targets):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        estimate_fisher(module, "cls", _batches(1), broken)
    assert module.bias.requires_grad is False and module.weight.requires_grad is True


# -- the penalty ---------------------------------------------------------------------


def test_penalty_is_zero_at_the_anchor_and_grows_quadratically_away_from_it():
    module = _linear()
    anchor = _anchor(module, fisher_value=2.0)
    assert _penalty(module, [anchor], 10.0) == 0.0
    count = sum(p.numel() for p in module.parameters())  # 8
    penalties = []
    for step in (0.1, 0.1):  # 0.1 then 0.2 away
        _shift(module, step)
        penalties.append(_penalty(module, [anchor], 10.0))
    # strength / 2 * sum F * d**2 = 5 * 2 * 8 * d**2
    assert penalties[0] == pytest.approx(5 * 2 * count * 0.01)
    assert penalties[1] == pytest.approx(4 * penalties[0])


def test_penalty_is_weighted_by_fisher_and_strength_and_sums_over_anchors():
    module = _linear()
    important = _anchor(module, task="seg")
    important.fisher["weight"].fill_(3.0)
    important.fisher["bias"].zero_()  # the bias did not matter to seg
    with torch.no_grad():
        module.bias.add_(5.0)
    assert _penalty(module, [important], 1.0) == 0.0  # moved only where F = 0
    with torch.no_grad():
        module.weight.add_(0.5)
    one = _penalty(module, [important], 1.0)
    assert one == pytest.approx(0.5 * 3.0 * 6 * 0.25)
    assert _penalty(module, [important], 4.0) == pytest.approx(4 * one)
    assert _penalty(module, [important, important], 1.0) == pytest.approx(2 * one)
    assert _penalty(module, [], 1.0) == 0.0


def test_penalty_gradient_pulls_back_towards_the_anchor():
    module = _linear()
    anchor = _anchor(module, fisher_value=1.0)
    _shift(module, 0.3)
    ewc_penalty(module, [anchor], 2.0).backward()
    # d/dtheta (s/2 F (theta - theta*)**2) = s F (theta - theta*) = 2 * 0.3
    for p in module.parameters():
        torch.testing.assert_close(p.grad, torch.full_like(p, 0.6))
    with torch.no_grad():
        for p in module.parameters():
            p.sub_(0.1 * p.grad)
    assert _penalty(module, [anchor], 2.0) < 0.5 * 2.0 * 8 * 0.3**2


def test_anchor_state_round_trips_through_a_weights_only_checkpoint():
    module = _linear()
    anchor = estimate_fisher(module, "det", _batches(2), _mse(module))
    buffer = io.BytesIO()
    torch.save(anchor.to_state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = TaskAnchor.from_state(state, torch.device("cpu"))
    assert restored.task == "det"
    for name in anchor.weights:
        assert torch.equal(restored.weights[name], anchor.weights[name])
        assert torch.equal(restored.fisher[name], anchor.fisher[name])
    _shift(module, 0.2)
    assert _penalty(module, [restored], 3.0) == _penalty(module, [anchor], 3.0)
