"""Shared fixtures: a private cache, tiny specs, and one Ray for the whole session."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from trainables.data import DataSpec
from trainables.phases import ModelSpec, PretrainSpec
from trainables.strategies import PlanContext

TINY_DATA = DataSpec(num_samples=360, image_size=16, num_classes=6, seed=0)
TINY_PRETRAIN = PretrainSpec(
    data=DataSpec(kind="synthetic_source", num_samples=400, image_size=16, num_classes=20),
    epochs=1,
)
TINY_MODEL = ModelSpec(width=4, num_groups=6, dropout=0.1, pretrained=TINY_PRETRAIN)
TINY_CONTEXT = PlanContext(model=TINY_MODEL, data=TINY_DATA, seed=0)
#: A 1+1+1-epoch progressive recipe that unfreezes the top 2 of 6 groups in phase 2.
TINY_PROGRESSIVE = {
    "frozen_epochs": 1,
    "partial_epochs": 1,
    "full_epochs": 1,
    "unfreeze_depth": 2,
    "base_lr": 3e-3,
    "lr_decay": 10.0,
    "batch_size": 32,
    "dropout": 0.1,
}


def write_best(path, plan) -> None:
    """A best.yaml for ``plan`` as a search exports it, with a val/acc >= 0.5 target."""
    import yaml

    from analysis.export import FORMAT

    document = {
        "format": FORMAT,
        "trial_id": "t0",
        "strategy": plan.strategy,
        "metrics": {},
        "targets": [{"metric": "val/acc", "threshold": 0.5, "direction": "max"}],
        "plan": plan.to_dict(),
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))


#: Set to 1 where torchvision is installed on purpose (CI's second environment): a test
#: marked ``torchvision`` then fails instead of skipping, so a broken install cannot
#: pass as a row of skips.
REQUIRE_TORCHVISION = "PHASETUNE_REQUIRE_TORCHVISION"
#: The same for a test marked ``peers``: the searches benchmarks/search_peers.py compares
#: phasetune's with (NePS), installed in that environment too.
REQUIRE_PEERS = "PHASETUNE_REQUIRE_PEERS"

#: Marker -> (the module a test so marked needs, the variable that makes its skip fail).
OPTIONAL = {
    "torchvision": ("torchvision.models", REQUIRE_TORCHVISION),
    "peers": ("neps", REQUIRE_PEERS),
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``torchvision`` (``peers``) skips where torchvision (NePS) does not
    import."""
    for marker, (module, _) in OPTIONAL.items():
        if item.get_closest_marker(marker) is None:
            continue
        try:
            importlib.import_module(module)
        except Exception as error:  # a torchvision built for another torch raises RuntimeError
            first_line = (str(error).strip().splitlines() or [""])[0]
            name = module.split(".")[0]
            pytest.skip(f"{name} does not import here ({type(error).__name__}: {first_line})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that starts Ray, through the session's Ray or any fixture built on it, is
    ``slow``: ``pytest -m "not slow"`` is then the fast loop."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """With ``PHASETUNE_REQUIRE_TORCHVISION=1`` (``PHASETUNE_REQUIRE_PEERS=1``), a
    ``torchvision`` (``peers``) test that skips fails."""
    report = yield
    required = [
        variable
        for marker, (_, variable) in OPTIONAL.items()
        if os.environ.get(variable) == "1" and item.get_closest_marker(marker) is not None
    ]
    if report.skipped and not hasattr(report, "wasxfail") and required:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but {required[0]}=1 requires it to run: {reason}"
    return report


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Data and pretrained backbones go to a fresh cache, never the user's."""
    path = str(tmp_path_factory.mktemp("phasetune-cache"))
    os.environ["PHASETUNE_CACHE_DIR"] = path
    return path


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory):
    """One local Ray (2 CPUs) for every test that needs it; shut down at the end."""
    import ray

    from search.ray_runtime import configure_runtime

    configure_runtime()
    # Workers start from this environment: benchmarks/ lets them import the fault
    # network the fault tests give as model.factory.
    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [benchmarks, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    # A worker group that cannot be placed gives up after 5 s, not Ray Train's 60, so
    # the test of that case takes seconds (the controller inherits this from the trial).
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "5")
    ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        logging_level="WARNING",
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    yield ray
    ray.shutdown()
