"""Node memory and images/s of phasetune on an image folder at real scale.

Answers three questions about a data set decoded once per node (DESIGN.md, "Data at
real scale"), on a synthetic 36-class folder of ``N`` JPEGs at 224 px:

- How long does decoding it once take?
- How much memory does the node use while 1 trial, 2 concurrent trials, and one
  2-worker DDP trial train on it, against the data's uint8 size?
- How fast does a trial train, against a plain PyTorch ``DataLoader`` loop reading the
  same decoded pixels?

With several ``--n`` it also says how each figure grows with ``N``.

The folder is ``<work-dir>/images-<N>-<size>/<class>/<i>.jpg``: each class a grating of
its own angle, frequency and colours, shifted and overlaid with noise per image, saved
at JPEG quality 90. It is written once and reused (a marker file records ``N`` and the
size); 38,000 images take well under a minute on 2 cores.

Each ``N`` is measured in turn:

decode_s
    ``load_dataset`` of the folder (``image_folder``, ImageNet normalisation,
    shorter-side resize) with an empty cache (``PHASETUNE_CACHE_DIR`` under the work
    dir), in a fresh process: listing, decoding, writing the node's uint8 store,
    splitting.
node_bytes_1_trial, node_bytes_2_trials, node_bytes_ddp
    The peak, sampled every 0.5 s, of the summed PSS (proportional set size: a page
    mapped by k processes counts 1/k in each, so shared pages count once) of every
    process of a real search: ``phasetune run`` of a generated experiment in a
    subprocess, with Ray started by it and everything Ray starts (GCS, raylet,
    dashboard, trial actors, Train workers). Its processes are the search's process
    tree and every process whose command line names ray, raylet, gcs_server or
    phasetune and that carries the run's marker in its environment (so another Ray on
    the machine is left out); the measuring process itself is not counted. The
    experiment trains small_cnn without pretraining, single-phase for 1 epoch
    (every trial reads the whole training split once, then validates), FIFO, with 1
    trial; 2 trials of 1 worker at once (1 CPU each); 1 trial of 2 DDP workers (1 CPU
    each); with ``--device cuda`` the workers share the GPU. Ray starts and stops with
    each run. A run's output is in
    ``<work-dir>/<run>.log``, its processes at the peak in ``<run>.peak.json``.
images_per_s, dataloader_images_per_s
    Training images/s of one process, side by side: phasetune's batch path
    (``iterate_task_batches`` on the training split: rows gathered from the mapped
    store, converted and normalised on the device) against a ``DataLoader`` (2
    workers, shuffled, pinned on a GPU) over a ``Dataset`` returning
    ``(pixels[rows[i]], label)`` from the same mapped store, normalised in the loop with
    the split's own ``Normalization``. Both train the same model (``build_model``, same
    seed) with AdamW and cross-entropy at the same batch size: ``--warmup`` untimed
    steps, then ``--steps`` timed ones in 5 turns each, the two sides alternating
    (each turn opens with 4 untimed steps that use up what was prefetched meanwhile),
    so that load from elsewhere slows both alike. ``ratio`` is phasetune over the
    DataLoader.
uint8_bytes
    ``N * 3 * size * size``: the decoded data set as uint8, the floor of node memory.

The table prints these per ``N`` in GB (10^9 bytes), decode time also per image
(``ms/img``); node memory's own parts at the peak are in ``<run>.peak.json``. The image
folders stay in ``--work-dir`` (default ``~/.cache/phasetune-data-scale``) for the next
run; each ``N``'s decoded store is removed once it is measured.

Goals printed beside the numbers: node memory at N=38000 with 2 concurrent trials at
most the uint8 size + 2 GB; images/s at least 1.0x the DataLoader loop; every cost
growing at most linearly in ``N`` (per image, a larger ``N`` costs at most 1.25x a
smaller one's; memory's growth per added image is shown in uint8 images).

    python benchmarks/data_scale.py                            # N=38000, 224 px
    python benchmarks/data_scale.py --n 4000 16000 38000 --json data_scale.json
    python benchmarks/data_scale.py --tiny                     # the smoke test's size
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import itertools
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from trainables.data import CACHE_DIR_ENV, DataSpec, Split, iterate_task_batches, load_dataset
from trainables.models import build_model
from trainables.phases import ModelSpec

#: The sign-language set the benchmark stands in for: 36 classes, 38,000 images.
FULL_N = 38_000
NUM_CLASSES = 36
IMAGE_SIZE = 224
JPEG_QUALITY = 90
#: Memory goal at FULL_N with 2 concurrent trials: uint8 size plus this many bytes.
HEADROOM_BYTES = 2_000_000_000
#: A larger N may cost at most this much more per image and still count as linear.
LINEAR_SLACK = 1.25
#: Seconds between two memory samples.
SAMPLE_PERIOD_S = 0.5
#: Command-line words of the processes a search starts.
PROCESS_NAMES = ("ray", "raylet", "gcs_server", "phasetune")
#: Environment variable marking every process of one measured run.
RUN_MARKER_ENV = "PHASETUNE_DATA_SCALE_RUN"
#: (trials, workers per trial) of each memory measurement.
MEMORY_RUNS = {"1_trial": (1, 1), "2_trials": (2, 1), "ddp": (1, 2)}
#: DataLoader worker processes of the plain loop.
LOADER_WORKERS = 2
#: Turns each side of the images/s comparison takes, and untimed steps opening a turn:
#: the DataLoader's queue (2 batches per worker) and phasetune's next batch.
ROUNDS = 5
ROUND_WARMUP = 2 * LOADER_WORKERS
#: The marker file's name inside a written folder; a dot name is not a class folder.
MARKER = ".data_scale.json"
#: Bump when the written images change, so an older folder is written again.
FOLDER_VERSION = 1
_NOISE_FIELDS = 16
_NOISE_BLOCK = 16


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every measurement of one benchmark run shares."""

    image_size: int = IMAGE_SIZE
    width: int = 4
    batch_size: int = 32
    steps: int = 60
    warmup: int = 5
    device: str = "cpu"
    timeout_s: float = 3 * 3600


#: The smoke test's size: tiny images, model and step counts.
TINY_N = 360
TINY = Settings(image_size=32, width=4, steps=10, warmup=2)


@dataclasses.dataclass(frozen=True)
class Row:
    """The figures of one data set size."""

    n: int
    uint8_bytes: int
    decode_s: float
    node_bytes_1_trial: int
    node_bytes_2_trials: int
    node_bytes_ddp: int
    images_per_s: float
    dataloader_images_per_s: float

    @property
    def ratio(self) -> float:
        return self.images_per_s / self.dataloader_images_per_s


# -- the image folder -------------------------------------------------------


def _class_template(label: int, size: int) -> np.ndarray:
    """Class ``label`` as an int16 (size, size, 3) grating of its own angle, frequency
    and two colours."""
    colours = np.random.default_rng(1000 + label).uniform(40, 215, size=(2, 3))
    angle = np.pi * ((label * 7) % NUM_CLASSES) / NUM_CLASSES
    frequency = 2 + label % 5
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (x * np.cos(angle) + y * np.sin(angle)))
    image = colours[0] * wave[..., None] + colours[1] * (1 - wave[..., None])
    return image.round().astype(np.int16)


def _noise_fields(size: int) -> list[np.ndarray]:
    """int16 (size, size, 3) noise: blotches of 16 px plus fine grain; images share a
    few fields, shifted, since drawing fresh noise per image costs more than encoding."""
    rng = np.random.default_rng(7)
    blocks = -(-size // _NOISE_BLOCK)
    fields = []
    for _ in range(_NOISE_FIELDS):
        coarse = rng.normal(0, 12, size=(blocks, blocks, 3))
        coarse = coarse.repeat(_NOISE_BLOCK, 0).repeat(_NOISE_BLOCK, 1)[:size, :size]
        fine = rng.normal(0, 4, size=(size, size, 3))
        fields.append((coarse + fine).round().astype(np.int16))
    return fields


def _write_images(job: tuple[Path, int, int, int]) -> None:
    """Writes images ``start..stop-1`` of the folder (a process pool's task)."""
    from PIL import Image

    root, size, start, stop = job
    templates = [_class_template(label, size) for label in range(NUM_CLASSES)]
    noise = _noise_fields(size)
    for index in range(start, stop):
        rng = np.random.default_rng(index)
        label = index % NUM_CLASSES
        shifts = tuple(int(s) for s in rng.integers(0, size, 4))
        image = np.roll(templates[label], shifts[:2], axis=(0, 1))
        image += np.roll(noise[int(rng.integers(_NOISE_FIELDS))], shifts[2:], axis=(0, 1))
        encoded = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            encoded, "JPEG", quality=JPEG_QUALITY
        )
        (root / f"c{label:02d}" / f"{index}.jpg").write_bytes(encoded.getvalue())


def image_folder(work_dir: Path, n: int, size: int) -> tuple[Path, float | None]:
    """The folder of ``n`` JPEGs at ``size`` px, written unless a complete one is there.

    Returns:
        The folder and the seconds writing it took (None: reused).
    """
    root = work_dir / f"images-{n}-{size}"
    expected = {"n": n, "size": size, "classes": NUM_CLASSES, "version": FOLDER_VERSION}
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == expected:
        return root, None
    started = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    for label in range(NUM_CLASSES):
        (root / f"c{label:02d}").mkdir(parents=True)
    chunk = 500
    jobs = [(root, size, start, min(start + chunk, n)) for start in range(0, n, chunk)]
    # Forked: the workers run only numpy and Pillow, which fork safely whatever threads
    # this process runs, and a spawned worker could not import a module loaded by path.
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        pool.map(_write_images, jobs, chunksize=1)
    marker.write_text(json.dumps(expected))
    return root, time.perf_counter() - started


def data_spec(folder: Path, size: int) -> DataSpec:
    """The folder as the benchmark's experiment reads it."""
    return DataSpec(
        kind="image_folder",
        path=str(folder.resolve()),
        image_size=size,
        num_classes=None,
        normalize="imagenet",
        resize="shorter_side",
    )


# -- decode once ------------------------------------------------------------


def decode_seconds(folder: Path, size: int) -> float:
    """Seconds ``load_dataset`` takes on an empty cache (the caller empties it)."""
    started = time.perf_counter()
    load_dataset(data_spec(folder, size))
    return time.perf_counter() - started


# -- node memory ------------------------------------------------------------


def _psutil() -> Any:
    # Ray ships psutil among its third-party files and puts them on sys.path on import.
    import ray  # noqa: F401

    return importlib.import_module("psutil")


class NodeMemory:
    """The peak summed PSS of one run's processes, sampled in a thread.

    A run's processes are ``root`` and its descendants, and every process whose command
    line names one of ``PROCESS_NAMES`` and whose environment carries ``marker`` in
    ``RUN_MARKER_ENV`` (Ray's processes inherit it, and keep it once orphaned).
    """

    def __init__(self, root: int, marker: str, period_s: float = SAMPLE_PERIOD_S) -> None:
        self.marker = marker
        self.period_s = period_s
        self.peak = 0
        #: (command line, PSS bytes) of every process at the peak, largest first.
        self.peak_processes: list[tuple[str, int]] = []
        self.samples = 0
        self._psutil = _psutil()
        self._root = self._psutil.Process(root)
        self._ours: dict[tuple[int, float], bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def __enter__(self) -> NodeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def processes(self) -> list[Any]:
        """The run's processes now."""
        psutil = self._psutil
        try:
            tree = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []  # the run has ended; orphans of it still carry the marker
        found = {process.pid: process for process in tree}
        for process in psutil.process_iter(["cmdline"]):
            if process.pid not in found and self._marked(process):
                found[process.pid] = process
        return list(found.values())

    def _marked(self, process: Any) -> bool:
        psutil = self._psutil
        try:
            key = (process.pid, process.create_time())
            if key not in self._ours:
                command = " ".join(process.info["cmdline"] or ())
                named = any(name in command for name in PROCESS_NAMES)
                self._ours[key] = named and process.environ().get(RUN_MARKER_ENV) == self.marker
            return self._ours[key]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    def sample(self) -> list[tuple[str, int]]:
        """(command line, PSS bytes) of each of the run's processes now."""
        psutil = self._psutil
        found = []
        for process in self.processes():
            try:
                command = " ".join(process.cmdline())
                found.append((command, process.memory_full_info().pss))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # ended between listing and reading, or not ours to read
        return found

    def _sample_until_stopped(self) -> None:
        while True:
            processes = self.sample()
            total = sum(pss for _, pss in processes)
            if total > self.peak:
                self.peak = total
                self.peak_processes = sorted(processes, key=lambda item: -item[1])
            self.samples += 1
            if self._stop.wait(self.period_s):
                return

    def stop_leftovers(self) -> None:
        """Ends this run's processes still running (a run cut short), one by one."""
        psutil = self._psutil
        for process in self.processes():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue


def experiment(
    name: str, folder: Path, trials: int, workers: int, settings: Settings, storage: Path
) -> dict[str, Any]:
    """A search of ``trials`` one-epoch single-phase trials of ``workers`` workers each;
    with ``settings.device`` a GPU, its workers share one."""
    gpus = 1 / (trials * workers) if settings.device.startswith("cuda") else 0.0
    return {
        "name": name,
        "dataset": {
            "kind": "image_folder",
            "path": str(folder.resolve()),
            "image_size": settings.image_size,
            "normalize": "imagenet",
            "resize": "shorter_side",
        },
        "model": {"backbone": "small_cnn", "width": settings.width, "pretrain": {"enabled": False}},
        "strategies": {
            "single_phase": {
                "space": {
                    "epochs": 1,
                    "lr": 1e-3,
                    "lr_schedule": "constant",
                    "early_stopping_patience": 3,
                    "batch_size": settings.batch_size,
                    "dropout": 0.3,
                    "head_lr_cls": 1.0,
                }
            }
        },
        "search": {
            "num_samples": trials,
            "max_concurrent_trials": trials,
            "sampler": "random",
            "scheduler": "fifo",
            "evaluate_baselines": False,
            "epoch_scale": 1.0,
        },
        "resources": {
            "workers_per_trial": workers,
            "cpus_per_worker": 1.0,
            "gpus_per_worker": gpus,
        },
        "storage": {"path": str(storage)},
    }


def node_bytes(
    name: str,
    folder: Path,
    trials: int,
    workers: int,
    settings: Settings,
    work_dir: Path,
    cache: Path,
) -> int:
    """Peak node memory of a ``phasetune run`` of ``experiment(...)``, in bytes.

    Raises:
        RuntimeError: the search failed, timed out, or a trial did not train its epoch.
    """
    storage = work_dir / "runs"
    config = experiment(name, folder, trials, workers, settings, storage)
    path = work_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.rmtree(storage / name, ignore_errors=True)
    marker = uuid.uuid4().hex
    # A Ray of its own on this machine, not a cluster this shell may point at.
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    environment.update({CACHE_DIR_ENV: str(cache), RUN_MARKER_ENV: marker})
    log = work_dir / f"{name}.log"
    command = [sys.executable, "-m", "search", "run", str(path)]
    with log.open("w") as output:
        search = subprocess.Popen(
            command, cwd=work_dir, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    with NodeMemory(search.pid, marker) as memory:
        try:
            returncode = search.wait(timeout=settings.timeout_s)
        except subprocess.TimeoutExpired:
            memory.stop_leftovers()
            search.wait()
            raise RuntimeError(
                f"{name}: no result in {settings.timeout_s:.0f} s; see {log}"
            ) from None
    memory.stop_leftovers()  # none after a clean end: the search stops the Ray it started
    if returncode != 0:
        raise RuntimeError(f"{name}: phasetune run exited with {returncode}; see {log}")
    ranking = json.loads((storage / name / "ranking.json").read_text())
    trained = [row for row in ranking if row["error"] is None and row["epochs"] == 1]
    if len(trained) != trials:
        raise RuntimeError(f"{name}: {len(trained)} of {trials} trials trained an epoch; see {log}")
    at_peak = [{"pss_bytes": pss, "command": line[:200]} for line, pss in memory.peak_processes]
    (work_dir / f"{name}.peak.json").write_text(json.dumps(at_peak, indent=2) + "\n")
    return memory.peak


# -- images/s ---------------------------------------------------------------


class StoreRows(torch.utils.data.Dataset):
    """A split's samples as a map-style dataset over the mapped uint8 store."""

    def __init__(self, split: Split) -> None:
        self.pixels = split.samples.pixels
        self.rows = split.rows.tolist()
        self.labels = split.labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixels[self.rows[index]], self.labels[index]


Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def phasetune_batches(split: Split, batch_size: int, device: torch.device) -> Batches:
    """Epoch after epoch of the trial's own batches: normalised on ``device``."""
    generator = torch.Generator().manual_seed(0)
    while True:
        for images, targets in iterate_task_batches(
            split, batch_size, shuffle=True, generator=generator, device=device
        ):
            yield images, targets["cls"]


def dataloader_batches(split: Split, batch_size: int, device: torch.device) -> Batches:
    """Epoch after epoch of a plain ``DataLoader``'s batches, normalised in the loop."""
    loader = torch.utils.data.DataLoader(
        StoreRows(split),
        batch_size=batch_size,
        shuffle=True,
        num_workers=LOADER_WORKERS,
        # Pinned pages only speed up copies to a GPU; torch warns and ignores it without one.
        pin_memory=device.type == "cuda",
        persistent_workers=True,
        generator=torch.Generator().manual_seed(0),
    )
    while True:
        for pixels, labels in loader:
            images = split.normalization.apply(pixels.to(device, non_blocking=True))
            yield images, labels.to(device, non_blocking=True)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainingSide:
    """One side of the images/s comparison: a model training on its own batches."""

    def __init__(
        self, batches: Batches, model_spec: ModelSpec, num_classes: int, device: torch.device
    ) -> None:
        self.batches = batches
        self.device = device
        torch.manual_seed(0)  # both sides start from the same weights
        self.model = build_model(model_spec, num_classes).to(device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        # Summed on the device, as the engine does: no host sync per step.
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)

    def train(self, steps: int) -> int:
        """Trains ``steps`` steps; returns the images they took."""
        seen = 0
        for images, labels in itertools.islice(self.batches, steps):
            logits = self.model(images)["cls"]
            loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.loss_sum += loss.detach()
            self.correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
        return seen

    def timed(self, steps: int) -> tuple[int, float]:
        """Images and seconds of ``steps`` steps, the device's work included."""
        _synchronize(self.device)
        started = time.perf_counter()
        seen = self.train(steps)
        _synchronize(self.device)
        return seen, time.perf_counter() - started


def training_rates(folder: Path, settings: Settings) -> tuple[float, float]:
    """Images/s of phasetune's batch path and of a DataLoader loop, in this process.

    The two take turns, ``ROUNDS`` times ``steps / ROUNDS`` timed steps each, so that
    whatever else the machine runs slows both alike. Each turn starts with
    ``ROUND_WARMUP`` untimed steps, which use up what either side prefetched while the
    other trained: the timed steps run at each side's own steady pace.
    """
    data = load_dataset(data_spec(folder, settings.image_size))
    model_spec = ModelSpec(width=settings.width, pretrained=None)
    device = torch.device(settings.device)
    split, size = data.train, settings.batch_size
    sides = (
        TrainingSide(phasetune_batches(split, size, device), model_spec, data.num_classes, device),
        TrainingSide(dataloader_batches(split, size, device), model_spec, data.num_classes, device),
    )
    images, seconds = [0, 0], [0.0, 0.0]
    try:
        for side in sides:
            side.train(settings.warmup)
        per_round = -(-settings.steps // ROUNDS)
        for _ in range(ROUNDS):
            for index, side in enumerate(sides):
                side.train(ROUND_WARMUP)
                seen, elapsed = side.timed(per_round)
                images[index] += seen
                seconds[index] += elapsed
    finally:
        for side in sides:
            side.batches.close()  # a DataLoader's workers end with its iterator
    return images[0] / seconds[0], images[1] / seconds[1]


# -- one size, all sizes ----------------------------------------------------


def _in_child(part: str, folder: Path, settings: Settings, cache: Path) -> Any:
    """Runs ``part`` of this script in a fresh process: nothing it loads stays here to
    count against the searches' memory, and decoding starts cold."""
    request = {"part": part, "folder": str(folder), "settings": dataclasses.asdict(settings)}
    environment = {**os.environ, CACHE_DIR_ENV: str(cache)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(request)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=settings.timeout_s,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{part} failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(request: dict[str, Any]) -> Any:
    folder, settings = Path(request["folder"]), Settings(**request["settings"])
    if request["part"] == "decode":
        return decode_seconds(folder, settings.image_size)
    return training_rates(folder, settings)


def measure(n: int, settings: Settings, work_dir: Path, say: Callable[[str], None] = print) -> Row:
    """Every figure of one size ``n``; its decoded store is removed afterwards."""
    folder, wrote_s = image_folder(work_dir, n, settings.image_size)
    if wrote_s is None:
        say(f"N={n}: reusing {folder}")
    else:
        say(f"N={n}: wrote {folder} in {wrote_s:.0f} s")
    cache = work_dir / f"cache-{n}"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    try:
        decode_s = _in_child("decode", folder, settings, cache)
        say(f"N={n}: decoded once in {decode_s:.1f} s")
        memory = {}
        for variant, (trials, workers) in MEMORY_RUNS.items():
            name = f"data_scale_{n}_{variant}"
            memory[variant] = node_bytes(name, folder, trials, workers, settings, work_dir, cache)
            say(f"N={n}: node memory, {variant.replace('_', ' ')}: {memory[variant] / 1e9:.2f} GB")
        ours, theirs = _in_child("rates", folder, settings, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return Row(
        n=n,
        uint8_bytes=n * 3 * settings.image_size**2,
        decode_s=decode_s,
        node_bytes_1_trial=memory["1_trial"],
        node_bytes_2_trials=memory["2_trials"],
        node_bytes_ddp=memory["ddp"],
        images_per_s=ours,
        dataloader_images_per_s=theirs,
    )


def run(
    sizes: Sequence[int], settings: Settings, work_dir: Path, say: Callable[[str], None] = print
) -> list[Row]:
    """Every size in increasing order."""
    work_dir.mkdir(parents=True, exist_ok=True)
    return [measure(n, settings, work_dir, say) for n in sorted(set(sizes))]


# -- report -----------------------------------------------------------------


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


@dataclasses.dataclass(frozen=True)
class Growth:
    """How one figure grew between two sizes.

    Attributes:
        figure: What grew, e.g. "memory, 2 trials".
        cost_ratio: The larger size's cost over the smaller's (for images/s: an
            epoch's time, N over the rate).
        n_ratio: The larger N over the smaller.
        detail: The figure's own terms: per image, or per added image.
    """

    figure: str
    cost_ratio: float
    n_ratio: float
    detail: str

    @property
    def linear(self) -> bool:
        return self.cost_ratio <= LINEAR_SLACK * self.n_ratio

    def line(self) -> str:
        verdict = "linear or better" if self.linear else "faster than linear"
        return f"  {self.figure}: {self.cost_ratio:.2f}x, {self.detail}: {verdict}"


def growth(smaller: Row, larger: Row) -> list[Growth]:
    """How each figure grew from ``smaller.n`` to ``larger.n``."""
    n_ratio = larger.n / smaller.n
    per_image = larger.uint8_bytes / larger.n
    added = larger.n - smaller.n
    grown = [
        Growth(
            "decode",
            larger.decode_s / smaller.decode_s,
            n_ratio,
            f"{1e3 * smaller.decode_s / smaller.n:.2f} -> {1e3 * larger.decode_s / larger.n:.2f}"
            " ms/image",
        )
    ]
    for label, field in (
        ("1 trial", "node_bytes_1_trial"),
        ("2 trials", "node_bytes_2_trials"),
        ("DDP", "node_bytes_ddp"),
    ):
        before, after = getattr(smaller, field), getattr(larger, field)
        marginal = (after - before) / added / per_image
        detail = f"{marginal:.2f} uint8 images per added image"
        grown.append(Growth(f"memory, {label}", after / before, n_ratio, detail))
    for label, field in (("phasetune", "images_per_s"), ("DataLoader", "dataloader_images_per_s")):
        before, after = getattr(smaller, field), getattr(larger, field)
        detail = f"{before:.0f} -> {after:.0f} images/s"
        grown.append(Growth(f"epoch time, {label}", n_ratio * before / after, n_ratio, detail))
    return grown


def format_report(rows: Sequence[Row], settings: Settings) -> str:
    header = (
        f"{'N':>7} {'uint8 GB':>9} {'decode s':>9} {'ms/img':>7} {'1 trial GB':>11}"
        f" {'2 trials GB':>12} {'DDP GB':>7} {'img/s':>7} {'DataLoader':>11} {'ratio':>6}"
    )
    lines = [
        f"{settings.image_size} px, {NUM_CLASSES} classes; small_cnn width {settings.width},"
        f" batch {settings.batch_size}; images/s on {settings.device} over {settings.steps}"
        f" steps after {settings.warmup}, {torch.get_num_threads()} torch threads",
        header,
    ]
    for row in rows:
        lines.append(
            f"{row.n:>7} {_gb(row.uint8_bytes):>9} {row.decode_s:>9.1f}"
            f" {1e3 * row.decode_s / row.n:>7.2f} {_gb(row.node_bytes_1_trial):>11}"
            f" {_gb(row.node_bytes_2_trials):>12} {_gb(row.node_bytes_ddp):>7}"
            f" {row.images_per_s:>7.0f} {row.dataloader_images_per_s:>11.0f} {row.ratio:>5.2f}x"
        )
    lines.append("goals:")
    full = [row for row in rows if row.n == FULL_N]
    for row in full or rows[-1:]:
        over = row.node_bytes_2_trials - row.uint8_bytes
        verdict = ("met" if over <= HEADROOM_BYTES else "not met") if full else "not measured"
        lines.append(
            f"  node memory at N={FULL_N}, 2 trials <= uint8 + {_gb(HEADROOM_BYTES)} GB:"
            f" {verdict}; at N={row.n} it is uint8 + {_gb(over)} GB"
        )
    for row in rows:
        verdict = "met" if row.ratio >= 1.0 else "not met"
        lines.append(
            f"  images/s >= 1.00x the DataLoader loop, N={row.n}: {row.ratio:.2f}x, {verdict}"
        )
    grown = {(a.n, b.n): growth(a, b) for a, b in itertools.pairwise(rows)}
    if not grown:
        lines.append("  cost linear in N: one size only; give several --n to see growth")
        return "\n".join(lines)
    faster = [g.figure for pair in grown.values() for g in pair if not g.linear]
    verdict = f"not met ({', '.join(dict.fromkeys(faster))})" if faster else "met"
    lines.append(f"  cost linear in N (at most {LINEAR_SLACK}x per image): {verdict}")
    for (smaller, larger), pair in grown.items():
        lines.append(f"N {smaller} -> {larger} ({larger / smaller:.2f}x):")
        lines += [g.line() for g in pair]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[FULL_N], help="images, one or more")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--width", type=int, default=Settings.width, help="small_cnn width")
    parser.add_argument("--batch-size", type=int, default=Settings.batch_size)
    parser.add_argument("--steps", type=int, default=Settings.steps, help="timed steps")
    parser.add_argument("--warmup", type=int, default=Settings.warmup, help="untimed steps")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="of images/s"
    )
    parser.add_argument("--timeout", type=float, default=Settings.timeout_s, help="per run, s")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path.home() / ".cache" / "phasetune-data-scale",
        help="image folders (kept), caches and searches",
    )
    parser.add_argument("--tiny", action="store_true", help="360 images at 32 px (smoke test)")
    parser.add_argument("--json", type=Path, help="also write one row per N here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.n) < 100:
        parser.error(f"--n: at least 100 images, so every one of {NUM_CLASSES} classes has some")
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    settings = Settings(
        image_size=args.image_size,
        width=args.width,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        device=args.device,
        timeout_s=args.timeout,
    )
    sizes = args.n
    if args.tiny:
        sizes = [TINY_N]
        settings = dataclasses.replace(TINY, device=settings.device, timeout_s=settings.timeout_s)
    rows = run(sizes, settings, args.work_dir)
    print(format_report(rows, settings))
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(row) for row in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
