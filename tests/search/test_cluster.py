"""Searches on a Ray cluster: joining by address, as a Ray job, with results on S3."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from search.cli import app
from search.config import ExperimentConfig
from search.experiment import run_search
from search.ray_runtime import cluster_address
from trainables.storage import ExperimentStore, is_remote, join_location, local_path

REPO = Path(__file__).resolve().parents[2]

#: Two 1+1+1-epoch progressive trials (the documented baseline first).
TINY_EXPERIMENT = {
    "name": "tiny-cluster",
    "dataset": {"num_samples": 360, "image_size": 16, "num_classes": 6},
    "model": {"width": 4, "pretrain": {"num_samples": 400, "epochs": 1}},
    "strategies": {
        "progressive": {"space": {"frozen_epochs": [1, 3], "partial_epochs": 1, "full_epochs": 1}}
    },
    "search": {"num_samples": 2, "epoch_scale": 0.1, "seed": 0, "scheduler": "fifo"},
}


def _free_ports(count: int) -> list[int]:
    """``count`` different free ports: each probe stays bound until all are taken, or
    the system may hand out one port twice (and `ray start` refuses a shared port)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


# -- addresses and storage locations (no Ray) ---------------------------------------


def test_an_explicit_address_wins_over_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address() is None
    assert cluster_address("auto") == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert cluster_address() == "127.0.0.1:6379"
    assert cluster_address("ray://head:10001") == "ray://head:10001"


def test_joining_a_cluster_passes_our_settings_and_leaves_the_jobs_own(monkeypatch):
    import ray

    from search import ray_runtime

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    # Inside a Ray job: the job's runtime_env already sets one of our variables.
    job = {"runtime_env": {"env_vars": {"RAY_DEDUP_LOGS": "0"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert ray_runtime.start_ray() is True
    (kwargs,) = calls
    assert kwargs["address"] == "127.0.0.1:6379"
    env_vars = kwargs["runtime_env"]["env_vars"]
    assert (
        env_vars["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
        == os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
    )
    assert "RAY_DEDUP_LOGS" not in env_vars  # Ray refuses a variable set twice
    assert "num_cpus" not in kwargs  # a cluster's resources are its own


def test_no_cluster_at_the_address_is_a_clear_error(monkeypatch, tmp_path):
    import ray

    def refuse(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({**TINY_EXPERIMENT, "storage": {"path": str(tmp_path)}}))
    result = CliRunner().invoke(app, ["run", str(path), "--address", "auto"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "no Ray cluster to join at 'auto'" in message
    assert not (tmp_path / "tiny-cluster").exists()


def test_a_ray_already_running_is_reused_and_not_shut_down(monkeypatch):
    import ray

    from search import ray_runtime

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append("init"))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    with ray_runtime.ray_running(address="auto"):
        inside = list(calls)
    assert inside == []  # joined as it is, not started again
    assert calls == []  # and left running


def test_run_and_resume_take_an_address(monkeypatch, tmp_path):
    from search import experiment

    seen = {}

    def fake_run(config, **kwargs):
        seen["run"] = kwargs["address"]
        seen["storage"] = (config.storage.path, config.storage.study)
        raise experiment.ConfigError("stop here")

    def fake_resume(directory, **kwargs):
        seen["resume"] = kwargs["address"]
        raise experiment.ConfigError("stop here")

    monkeypatch.setattr(experiment, "run_search", fake_run)
    monkeypatch.setattr(experiment, "resume_search", fake_resume)
    runner = CliRunner()
    storage = ["--results-dir", "s3://b/p", "--study", "postgresql://u@db/optuna"]
    result = runner.invoke(app, ["run", "--address", "127.0.0.1:6379", *storage])
    assert result.exit_code == 2 and "stop here" in result.output
    result = runner.invoke(app, ["resume", str(tmp_path), "--address", "auto"])
    assert result.exit_code == 2
    assert seen == {
        "run": "127.0.0.1:6379",
        "storage": ("s3://b/p", "postgresql://u@db/optuna"),
        "resume": "auto",
    }


def test_a_remote_storage_path_needs_an_rdb_study(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("storage: {path: 's3://bucket/phasetune'}\n")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "storage.study" in message and "postgresql://" in message
    assert "Traceback" not in result.output
    assert not (tmp_path / "s3:").exists()
    # With a study URL the same storage is accepted; file:// stays on this machine.
    remote = {"storage": {"path": "s3://bucket/p?region=x", "study": "sqlite:///s.db"}}
    config = ExperimentConfig.model_validate(remote)
    assert config.storage.experiment_location("quickstart") == "s3://bucket/p/quickstart?region=x"
    shared = ExperimentConfig.model_validate({"storage": {"path": f"file://{tmp_path}"}})
    assert shared.storage.experiment_location("n") == str(tmp_path / "n")


def test_locations_keep_uri_options_and_local_paths():
    assert is_remote("gs://bucket/x") and is_remote("s3://b")
    assert not is_remote("/tmp/x") and not is_remote("file:///tmp/x")
    assert local_path("file:///tmp/a%20b") == Path("/tmp/a b")
    assert join_location("s3://b/r?scheme=http", "e", "f") == "s3://b/r/e/f?scheme=http"
    assert ExperimentStore.at("relative").location == str(Path("relative").resolve())


# -- results on S3 -------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_results():
    """A moto S3 server on 127.0.0.1 and a bucket on it: the experiments' URI root.

    Credentials, region and endpoint travel inside the URI, so Ray's trial processes
    (started before this test set anything) reach the same bucket.
    """
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    (port,) = _free_ports(1)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    root = f"s3://key:secret@phasetune/results?{options}"
    import pyarrow.fs as pafs

    filesystem, _ = pafs.FileSystem.from_uri(f"{root}&allow_bucket_creation=true")
    filesystem.create_dir("phasetune")
    yield root
    server.stop()


@pytest.fixture(scope="module")
def searched_on_s3(ray_session, s3_results, tmp_path_factory):
    study = tmp_path_factory.mktemp("study") / "study.db"
    experiment = {**TINY_EXPERIMENT, "storage": {"path": s3_results, "study": f"sqlite:///{study}"}}
    return run_search(ExperimentConfig.model_validate(experiment))


def test_a_search_writes_its_results_through_the_s3_filesystem(searched_on_s3):
    import pyarrow.parquet as pq

    outcome = searched_on_s3
    assert isinstance(outcome.experiment_dir, str)
    assert outcome.experiment_dir.startswith("s3://") and "tiny-cluster" in outcome.experiment_dir
    assert len(outcome.ranked) == 2
    assert all(item.record.status == "done" for item in outcome.ranked)
    store = ExperimentStore.at(outcome.experiment_dir)
    ranking = json.loads(store.read_text("ranking.json"))
    assert [row["trial_id"] for row in ranking] == [i.record.trial_id for i in outcome.ranked]
    best = yaml.safe_load(store.read_text("best.yaml"))
    assert best["trial_id"] == outcome.ranked[0].record.trial_id
    assert best == json.loads(store.read_text("best.json"))
    assert f"phasetune train {store.uri('best.yaml')}" in store.read_text("best.yaml")
    assert yaml.safe_load(store.read_text("experiment.yaml"))["name"] == "tiny-cluster"
    with store.filesystem.open_input_file(f"{store.root}/results.parquet") as file:
        assert pq.read_table(file).num_rows == 2
    import pyarrow.fs as pafs

    files = [
        info.path[len(store.root) + 1 :]
        for info in store.filesystem.get_file_info(pafs.FileSelector(store.root, recursive=True))
    ]
    for item in outcome.ranked:
        trial = item.record.trial_id
        assert f"plans/{trial}.json" in files
        assert f"tune/{trial}/result.json" in files
        # The events went through the local mirror, one run folder per trial.
        assert any(f.startswith(f"tensorboard/{trial}/events.out.tfevents") for f in files)


def test_status_analyze_and_export_read_an_s3_experiment(searched_on_s3, tmp_path):
    outcome = searched_on_s3
    runner = CliRunner()
    status = runner.invoke(app, ["status", outcome.experiment_dir])
    assert status.exit_code == 0, status.output
    assert "tiny-cluster: 2 of 2 trials" in status.output
    analyzed = runner.invoke(app, ["analyze", outcome.experiment_dir])
    assert analyzed.exit_code == 0, analyzed.output
    exported = runner.invoke(
        app, ["export", outcome.experiment_dir, "--rank", "2", "--output", str(tmp_path)]
    )
    assert exported.exit_code == 0, exported.output
    second = outcome.ranked[1].record.trial_id
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["trial_id"] == second


def test_report_and_retrain_from_an_s3_experiment(searched_on_s3, tmp_path):
    outcome = searched_on_s3
    store = ExperimentStore.at(outcome.experiment_dir)
    runner = CliRunner()
    report = runner.invoke(app, ["report", outcome.experiment_dir])
    assert report.exit_code == 0, report.output
    assert store.is_file("report/report.md") and store.is_file("report/report.html")
    assert "tiny-cluster" in store.read_text("report/report.md")
    out = tmp_path / "retrained"
    args = ["train", outcome.best_yaml, "--output", str(out), "--threads", "1"]
    retrained = runner.invoke(app, args)
    assert retrained.exit_code == 0, retrained.output
    assert (out / "model.pt").exists()


def test_a_ddp_trial_keeps_its_train_run_and_events_on_s3(ray_session, s3_results, tmp_path):
    import pyarrow.fs as pafs

    experiment = {
        **TINY_EXPERIMENT,
        "name": "tiny-ddp",
        "search": {**TINY_EXPERIMENT["search"], "num_samples": 1},
        "resources": {"workers_per_trial": 2},
        "storage": {"path": s3_results, "study": f"sqlite:///{tmp_path / 'study.db'}"},
    }
    outcome = run_search(ExperimentConfig.model_validate(experiment))
    assert [item.record.status for item in outcome.ranked] == ["done"]
    store = ExperimentStore.at(outcome.experiment_dir)
    selector = pafs.FileSelector(store.root, recursive=True)
    files = [info.path[len(store.root) + 1 :] for info in store.filesystem.get_file_info(selector)]
    trial = outcome.ranked[0].record.trial_id
    # Ray Train's run (checkpoints) and rank 0's events, both through the filesystem.
    assert any(f.startswith(f"train_runs/train-{trial}/") and "checkpoint" in f for f in files)
    assert any(f.startswith(f"tensorboard/{trial}/events.out.tfevents") for f in files)


def test_an_existing_s3_experiment_is_refused_then_moved_aside(searched_on_s3, s3_results):
    from search.config import ConfigError
    from search.experiment import prepare_experiment_dir

    config = ExperimentConfig.model_validate(
        {**TINY_EXPERIMENT, "storage": {"path": s3_results, "study": "sqlite:///unused.db"}}
    )
    with pytest.raises(ConfigError, match="already exists"):
        prepare_experiment_dir(config, overwrite=False)
    store = prepare_experiment_dir(config, overwrite=True)
    assert not store.exists()
    import pyarrow.fs as pafs

    parent = ExperimentStore.at(s3_results)
    names = [
        info.base_name for info in parent.filesystem.get_file_info(pafs.FileSelector(parent.root))
    ]
    aside = [name for name in names if name.startswith("tiny-cluster.replaced-")]
    assert aside and ExperimentStore.at(parent.uri(aside[0])).is_file("best.yaml")


# -- a Ray job on a cluster started with `ray start` ----------------------------------


@pytest.fixture
def ray_head():
    """A head node of its own (2 CPUs, loopback, its own ports and temp dir), apart
    from the session's Ray; yields its dashboard URL.

    Stopped by ending ``ray start --block`` and then any process left with this
    temp dir in its command line: ``ray stop`` would stop every Ray on the machine.
    """
    import psutil

    temp_dir = tempfile.mkdtemp(prefix="pt-job-", dir="/tmp")
    gcs_port, dashboard_port, client, agent, agent_grpc, runtime_env, metrics = _free_ports(7)
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        "--num-cpus=2",
        "--num-gpus=0",
        f"--temp-dir={temp_dir}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # A private cluster on loopback: no token to hand the job client.
    env["RAY_AUTH_MODE"] = "disabled"
    log = open(Path(temp_dir, "ray-start.log"), "w")  # noqa: SIM115 - closed at teardown
    head = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 90
        while True:
            if head.poll() is not None:
                pytest.skip(f"ray start failed here: {Path(temp_dir, 'ray-start.log').read_text()}")
            try:
                JobSubmissionClient(url).list_jobs()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    pytest.skip("the head node's dashboard did not come up in 90 s")
                time.sleep(1)
        yield url
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        log.close()
        left = []
        for process in psutil.process_iter(["cmdline"]):
            try:
                if any(temp_dir in part for part in process.info["cmdline"] or ()):
                    process.kill()
                    left.append(process)
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_search_runs_as_a_ray_job_on_a_started_cluster(ray_head, private_cache, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(yaml.safe_dump(TINY_EXPERIMENT))
    results = tmp_path / "results"
    client = JobSubmissionClient(ray_head)
    job = client.submit_job(
        entrypoint=f"{sys.executable} -m search run {experiment} --results-dir {results}",
        runtime_env={
            "working_dir": str(REPO),
            "excludes": [
                ".git",
                ".venv",
                "**/__pycache__",
                ".pytest_cache",
                ".ruff_cache",
                "*.egg-info",
                "phasetune_results",
            ],
            # The session's private cache: the backbone is pretrained once.
            "env_vars": {"PHASETUNE_CACHE_DIR": private_cache},
        },
    )
    deadline = time.monotonic() + 150
    while (status := client.get_job_status(job)) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        assert time.monotonic() < deadline, client.get_job_logs(job)
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs
    # The entrypoint joined the job's cluster (RAY_ADDRESS) rather than starting one.
    assert "joining the Ray cluster at" in logs
    assert "best config:" in logs
    directory = results / "tiny-cluster"
    ranking = json.loads((directory / "ranking.json").read_text())
    assert len(ranking) == 2 and all(row["status"] == "done" for row in ranking)
    assert yaml.safe_load((directory / "best.yaml").read_text())["trial_id"] in logs
    status_output = CliRunner().invoke(app, ["status", str(directory)])
    assert "tiny-cluster: 2 of 2 trials" in status_output.output
