"""Mixed precision, channels-last and device-resident data: the paths GPUs take, run on CPU."""

from __future__ import annotations

import pytest
import torch

from analysis.targets import NSL
from tests.conftest import TINY_CONTEXT
from tests.trainables.test_engine import RecordingReporter
from trainables.data import load_dataset
from trainables.engine import EngineContext, resolve_precision, run_plan
from trainables.engine._loop import Trainer
from trainables.strategies import build_plan

SINGLE = {"epochs": 3, "lr": 3e-3, "batch_size": 32, "dropout": 0.1, "lr_schedule": "constant"}


def _run(**context: object) -> list[dict]:
    plan = build_plan("single_phase", SINGLE, TINY_CONTEXT)
    reporter = RecordingReporter()
    run_plan(plan, EngineContext(targets=NSL.targets, threads=1, **context), reporter)
    return reporter.reports


def test_auto_precision_is_fp32_off_gpus_and_bf16_when_asked():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="precision: unknown 'fp16'"):
        resolve_precision("fp16", cpu)


def test_bf16_autocast_trains_and_keeps_fp32_weights():
    fp32 = _run(precision="fp32")
    bf16 = _run(precision="bf16")
    # Learning happens under autocast: the training loss falls epoch over epoch.
    assert bf16[-1]["train/loss"] < bf16[0]["train/loss"]
    # Same seeds and batches; bf16 rounding moves the numbers, but not far.
    assert bf16[-1]["val/acc"] == pytest.approx(fp32[-1]["val/acc"], abs=0.15)
    assert bf16[0]["train/loss"] != fp32[0]["train/loss"]


def test_bf16_checkpoint_weights_stay_fp32():
    plan = build_plan("single_phase", {**SINGLE, "epochs": 1}, TINY_CONTEXT)
    reporter = RecordingReporter()
    run_plan(plan, EngineContext(targets=NSL.targets, threads=1, precision="bf16"), reporter)
    weights = reporter.states[-1]["model"]
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}


def test_channels_last_changes_the_layout_not_the_result():
    plain = _run(precision="fp32", channels_last=False)
    last = _run(precision="fp32", channels_last=True)
    # Convolutions sum in another order: equal up to rounding that three epochs grow
    # (to 1.05% of val/loss on one CPU's kernels).
    for metric in ("train/loss", "val/loss"):
        assert last[-1][metric] == pytest.approx(plain[-1][metric], rel=3e-2)
    # After three epochs the tiny model is still near chance on its 72 validation
    # images, so that rounding can tip a few of them to another class (on some CPUs
    # two do): accuracy is equal within three images.
    one_image = 1 / len(load_dataset(TINY_CONTEXT.data).val)
    assert last[-1]["val/acc"] == pytest.approx(plain[-1]["val/acc"], abs=3.01 * one_image)


def test_channels_last_is_the_weights_layout_when_asked():
    plan = build_plan("single_phase", SINGLE, TINY_CONTEXT)

    def conv_weights(channels_last: bool | None) -> list[torch.Tensor]:
        context = EngineContext(threads=1, channels_last=channels_last)
        model = Trainer(plan, context, RecordingReporter()).model
        return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]

    layout = torch.channels_last
    assert all(w.is_contiguous(memory_format=layout) for w in conv_weights(True))
    # Off a GPU, None means the default layout.
    assert not any(w.is_contiguous(memory_format=layout) for w in conv_weights(None))
