"""Task weighting: a contract every method keeps, and each method's own formula."""

from __future__ import annotations

import io
import math

import pytest
import torch

from trainables.phases import WeightingSpec
from trainables.weighting import (
    WEIGHTING_METHODS,
    WEIGHTING_PARAMS,
    TaskWeighting,
    build_weighting,
    check_weighting,
    loss_ratio_weights,
)

TASKS = ("seg", "det", "cls")
#: Per-epoch mean losses and validation scores that move every epoch-level method.
EPOCHS = [
    ({"seg": 1.0, "det": 2.0, "cls": 4.0}, {"seg": 0.2, "det": 0.5, "cls": 0.1}),
    ({"seg": 0.5, "det": 1.8, "cls": 4.0}, {"seg": 0.3, "det": 0.6, "cls": 0.1}),
    ({"seg": 0.4, "det": 0.9, "cls": 3.0}, {"seg": 0.4, "det": 0.6, "cls": 0.2}),
    ({"seg": 0.3, "det": 0.8, "cls": 2.5}, {"seg": 0.5, "det": 0.7, "cls": 0.2}),
]
METHODS = sorted(WEIGHTING_METHODS)


def _build(method: str, tasks: tuple[str, ...] = TASKS, **params: float) -> TaskWeighting:
    return build_weighting(WeightingSpec(method, params), tasks)


def _leaf_losses(values: list[float], tasks: tuple[str, ...] = TASKS) -> dict[str, torch.Tensor]:
    return {
        task: torch.tensor(value, requires_grad=True)
        for task, value in zip(tasks, values, strict=True)
    }


def _train(weighting: TaskWeighting, epochs: list, steps: int = 3) -> None:
    """A few optimizer steps and an end of epoch per entry, as the engine drives it."""
    params = weighting.parameters()
    optimizer = torch.optim.SGD(params, lr=0.1) if params else None
    for mean_losses, val_scores in epochs:
        for _ in range(steps):
            total, _ = weighting.combine(_leaf_losses(list(mean_losses.values())))
            if optimizer is not None:
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
        weighting.end_epoch(mean_losses, val_scores)


def _current(weighting: TaskWeighting) -> torch.Tensor:
    return weighting.weights(torch.ones(len(weighting.tasks)))


# -- contract: every method --------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_weights_are_finite_positive_detached_and_shaped(method):
    weighting = _build(method)
    for epoch in range(len(EPOCHS) + 1):
        weights = _current(weighting)
        assert weights.shape == (len(TASKS),)
        assert torch.isfinite(weights).all() and (weights > 0).all()
        assert not weights.requires_grad and weights.grad_fn is None
        if epoch < len(EPOCHS):
            _train(weighting, [EPOCHS[epoch]])


@pytest.mark.parametrize("method", METHODS)
def test_total_loss_reaches_every_task(method):
    weighting = _build(method)
    _train(weighting, EPOCHS[:2])
    losses = _leaf_losses([0.5, 2.0, 1.2])
    total, weights = weighting.combine(losses)
    total.backward()
    for task in TASKS:
        assert losses[task].grad is not None and float(losses[task].grad) > 0
    assert not weights.requires_grad
    torch.testing.assert_close(weights, _current(weighting))


@pytest.mark.parametrize("method", METHODS)
def test_state_survives_a_weights_only_checkpoint(method):
    original = _build(method)
    _train(original, EPOCHS[:2])
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = _build(method)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(_current(restored), _current(original), rtol=0, atol=0)
    _train(original, EPOCHS[2:])
    _train(restored, EPOCHS[2:])
    torch.testing.assert_close(_current(restored), _current(original), rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_state_of_other_tasks_is_refused(method):
    state = _build(method).state_dict()
    with pytest.raises(ValueError, match="weighting state is for tasks"):
        _build(method, tasks=("cls", "seg", "det")).load_state_dict(state)


@pytest.mark.parametrize("method", METHODS)
def test_a_single_task_trains_on_its_plain_loss(method):
    loss = torch.tensor(2.5, requires_grad=True)
    total, weights = _build(method, tasks=("cls",)).combine({"cls": loss})
    assert float(total.detach()) == pytest.approx(2.5)
    assert weights.tolist() == [1.0]


@pytest.mark.parametrize("method", METHODS)
def test_same_inputs_give_same_weights(method):
    first, second = _build(method), _build(method)
    _train(first, EPOCHS)
    _train(second, EPOCHS)
    torch.testing.assert_close(_current(first), _current(second), rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_defaults_are_filled_in(method):
    assert _build(method).params == WEIGHTING_PARAMS[method]


def test_every_method_has_its_parameters_listed():
    assert set(WEIGHTING_PARAMS) == set(WEIGHTING_METHODS)


# -- loss ratio ----------------------------------------------------------------

DOC_LOSSES = {"seg": 1.1234, "det": 4.5678, "cls": 2.3012}


def test_loss_ratio_follows_the_documents_formula():
    assert loss_ratio_weights(list(DOC_LOSSES.values()), 0.5) == pytest.approx(
        [1.54, 0.76, 1.08], abs=0.01
    )
    weighting = _build("loss_ratio")
    assert _current(weighting).tolist() == [1.0, 1.0, 1.0]
    weighting.end_epoch(DOC_LOSSES)
    assert _current(weighting).tolist() == pytest.approx([1.54, 0.76, 1.08], abs=0.01)


def test_negative_alpha_inverts_the_ordering():
    losses = list(DOC_LOSSES.values())
    positive = loss_ratio_weights(losses, 0.5)
    negative = loss_ratio_weights(losses, -0.5)
    assert sorted(range(3), key=positive.__getitem__) == sorted(
        range(3), key=negative.__getitem__, reverse=True
    )
    assert loss_ratio_weights(losses, 0.0) == [1.0, 1.0, 1.0]


def test_loss_ratio_refuses_losses_it_cannot_divide_by():
    with pytest.raises(ValueError, match="finite and > 0"):
        loss_ratio_weights([1.0, 0.0], 0.5)
    weighting = _build("loss_ratio")
    weighting.end_epoch(DOC_LOSSES)
    before = _current(weighting).tolist()
    weighting.end_epoch({"seg": 1.0, "det": 0.0, "cls": math.nan})
    assert _current(weighting).tolist() == before


@pytest.mark.parametrize("method", ["loss_ratio", "dwa", "validation"])
def test_momentum_blends_previous_and_fresh_weights(method):
    plain, smooth = _build(method), _build(method, momentum=0.75)
    expected = torch.ones(len(TASKS))
    for mean_losses, val_scores in EPOCHS:
        plain.end_epoch(mean_losses, val_scores)
        smooth.end_epoch(mean_losses, val_scores)
        fresh = _current(plain)
        expected = 0.75 * expected + 0.25 * fresh
        torch.testing.assert_close(_current(smooth), expected)


# -- dynamic weight average ----------------------------------------------------------


def test_dwa_by_hand_over_three_epochs():
    weighting = _build("dwa")
    epochs = [EPOCHS[0][0], EPOCHS[1][0], EPOCHS[2][0]]
    weighting.end_epoch(epochs[0])
    assert _current(weighting).tolist() == [1.0, 1.0, 1.0]
    # r = [0.5/1.0, 1.8/2.0, 4.0/4.0], w = 3 * softmax(r / 2)
    weighting.end_epoch(epochs[1])
    assert _current(weighting).tolist() == pytest.approx([0.8558, 1.0453, 1.0989], abs=1e-4)
    # r = [0.4/0.5, 0.9/1.8, 3.0/4.0]
    weighting.end_epoch(epochs[2])
    assert _current(weighting).tolist() == pytest.approx([1.0578, 0.9105, 1.0317], abs=1e-4)
    assert float(_current(weighting).sum()) == pytest.approx(3.0)


# -- validation ------------------------------------------------------------------------


def test_validation_favours_the_weakest_task_and_sums_to_k():
    weighting = _build("validation")
    weighting.end_epoch(DOC_LOSSES, None)
    assert _current(weighting).tolist() == [1.0, 1.0, 1.0]
    weighting.end_epoch(DOC_LOSSES, {"cls": 0.4, "seg": 0.3, "det": 0.5})
    weights = _current(weighting)
    # Tasks are seg, det, cls: seg (0.3) is weakest, det (0.5) strongest.
    assert weights.tolist() == pytest.approx([1.1015, 0.9018, 0.9967], abs=1e-4)
    assert int(weights.argmax()) == 0 and int(weights.argmin()) == 1
    assert float(weights.sum()) == pytest.approx(3.0)


def test_validation_keeps_its_weights_without_complete_scores():
    weighting = _build("validation", temperature=0.5)
    weighting.end_epoch(DOC_LOSSES, {"cls": 0.4, "seg": 0.3, "det": 0.5})
    before = _current(weighting).tolist()
    weighting.end_epoch(DOC_LOSSES, {"cls": 0.9, "seg": 0.9})
    weighting.end_epoch(DOC_LOSSES, None)
    assert _current(weighting).tolist() == before


# -- uncertainty -------------------------------------------------------------------------


def test_uncertainty_learns_the_inverse_loss():
    weighting = _build("uncertainty", tasks=("small", "large"))
    (log_vars,) = weighting.parameters()
    optimizer = torch.optim.SGD([log_vars], lr=0.1)
    for _ in range(200):
        total, _ = weighting.combine({"small": torch.tensor(1.0), "large": torch.tensor(10.0)})
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    weights = _current(weighting)
    assert weights[1] < weights[0]
    # The optimum of exp(-s) * L + s is s = log(L), i.e. weight 1 / L.
    assert log_vars.tolist() == pytest.approx([0.0, math.log(10.0)], abs=1e-3)
    assert weights.tolist() == pytest.approx([1.0, 0.1], abs=1e-3)


def test_uncertainty_restores_into_the_parameter_the_optimizer_holds():
    weighting = _build("uncertainty")
    (param,) = weighting.parameters()
    weighting.load_state_dict({"tasks": list(TASKS), "log_vars": torch.tensor([0.1, 0.2, 0.3])})
    assert weighting.parameters()[0] is param
    assert weighting.to("cpu").parameters()[0] is param
    torch.testing.assert_close(param.detach(), torch.tensor([0.1, 0.2, 0.3]))


# -- parameter validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            WeightingSpec("dwa", {"temperature": 0}),
            "weighting.params.temperature: must be > 0, got 0",
        ),
        (
            WeightingSpec("dwa", {"beta": 1.0}),
            "weighting.params.beta: unknown for method 'dwa'; use temperature, momentum",
        ),
        (
            WeightingSpec("equal", {"alpha": 0.5}),
            "weighting.params.alpha: unknown for method 'equal'; it takes no parameters",
        ),
        (
            WeightingSpec("loss_ratio", {"momentum": 1.0}),
            "weighting.params.momentum: must be in [0, 1), got 1.0",
        ),
        (
            WeightingSpec("loss_ratio", {"alpha": 2}),
            "weighting.params.alpha: must be in [-1, 1], got 2",
        ),
        (
            WeightingSpec("validation", {"temperature": "hot"}),
            "weighting.params.temperature: must be a number, got 'hot'",
        ),
        (
            WeightingSpec("loss_ratio", {"alpha": True}),
            "weighting.params.alpha: must be a number, got True",
        ),
        (
            WeightingSpec("dwa", {"temperature": math.inf}),
            "weighting.params.temperature: must be finite, got inf",
        ),
        (
            WeightingSpec("gradnorm"),
            "weighting.method: unknown method 'gradnorm';"
            " use one of " + ", ".join(WEIGHTING_METHODS),
        ),
    ],
)
def test_bad_weighting_is_refused_in_one_line(spec, message):
    for refuse in (lambda: check_weighting(spec), lambda: build_weighting(spec, TASKS)):
        with pytest.raises(ValueError) as error:
            refuse()
        assert str(error.value) == message


@pytest.mark.parametrize(
    "spec",
    [
        WeightingSpec("loss_ratio", {"alpha": 0.5}),
        WeightingSpec("loss_ratio", {"alpha": -1, "momentum": 0.9}),
        WeightingSpec("dwa", {"temperature": 2.0}),
    ],
)
def test_documented_settings_pass(spec):
    assert check_weighting(spec) is None
    weights = build_weighting(spec, TASKS).weights(torch.tensor([1.0, 2.0, 4.0]))
    assert weights.shape == (3,) and torch.isfinite(weights).all() and (weights > 0).all()


def test_building_needs_a_task():
    with pytest.raises(ValueError, match="at least one task"):
        build_weighting(WeightingSpec(), ())
