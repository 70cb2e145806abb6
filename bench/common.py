"""Helpers the benchmark scripts share: cached QaTa-COV19 arrays, the learning-rate schedule
and time/patience guard around `train_segmenter`, FLOP counts, portable model files.

Not a package module: each script does `sys.path.insert(0, REPO)` and imports `bench.common`.
Nothing here imports Django; Keras only inside the functions that need it.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED_DATA = Path(os.environ.get("COLLABMASK_SHARED_DATA", REPO.parent / "shared" / "data"))
QATA_ROOT = SHARED_DATA / "qata-cov19"
CACHE_DIR = Path(os.environ.get("COLLABMASK_BENCH_CACHE", REPO / "var" / "bench-cache"))
BASELINE_F1 = 0.78  # textbook from-scratch U-Net, 45 CPU-minutes at 128² (issue 7)
PAPER_F1 = 0.8320  # Degerli et al. 2021, best Dice on QaTa-COV19
LVIT_F1 = 0.8366  # LViT-T on QaTa-COV19 (Li et al. 2023)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- data -------------------------------------------------------------------------------


def qata_train_folder(root: Path) -> Path:
    """The Train Set folder of a QaTa-COV19 copy (splits/ divides it into train and valid)."""
    from cxrio.qata import SPLIT_FOLDERS

    return root / SPLIT_FOLDERS["train"]


def qata_split_names(root: Path, split: str) -> list[str]:
    """Image names of splits/<split>.txt (train or valid) of the shared QaTa-COV19 copy."""
    path = root / "splits" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no split file {path}; see {root / 'SOURCES.md'}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def subset(names: Sequence[str], limit: int | None, *, seed: int) -> list[str]:
    """`limit` names drawn without replacement (seeded), kept in their original order."""
    if limit is None or limit >= len(names):
        return list(names)
    keep = np.sort(np.random.default_rng(seed).choice(len(names), size=limit, replace=False))
    return [names[i] for i in keep]


def first_of_each(keys: Sequence[bytes]) -> list[int]:
    """Positions of the first occurrence of each distinct key, in order."""
    seen: set[bytes] = set()
    keep = []
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def distinct_names(folder: Path, names: Sequence[str]) -> list[str]:
    """`names` without byte-identical repeats (same image file and same mask file under
    another name; the shared copy's training list holds 817 of them), first name kept."""
    from cxrio.qata import case_paths

    def key(name: str) -> bytes:
        image, mask = case_paths(name)
        digest = hashlib.sha256((folder / image).read_bytes())
        digest.update((folder / mask).read_bytes())
        return digest.digest()

    return [names[i] for i in first_of_each([key(n) for n in names])]


def cached_cases(
    folder: Path, names: Sequence[str], size: int, *, cache_dir: Path = CACHE_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, S, S), masks bool (N, S, S)) of `names` at `size`, memory-mapped from
    .npy files under `cache_dir`, so repeated runs skip decoding thousands of PNGs."""
    key = hashlib.sha256(f"{folder.resolve()}|{size}|{'|'.join(names)}".encode()).hexdigest()[:16]
    paths = [cache_dir / f"qata-{size}-{len(names)}-{key}-{kind}.npy" for kind in ("x", "y")]
    if not all(p.is_file() for p in paths):
        from mlworker.data import load_qata_folder

        started = time.perf_counter()
        cases = load_qata_folder(folder, size=size, names=list(names))
        if not cases.labelled.all():
            missing = [n for n, ok in zip(cases.names, cases.labelled, strict=True) if not ok]
            raise ValueError(f"{len(missing)} images have no mask, e.g. {missing[:3]}")
        cache_dir.mkdir(parents=True, exist_ok=True)
        for path, array in zip(paths, (cases.images, cases.masks), strict=True):
            tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
            np.save(tmp, array)
            os.replace(tmp, path)
        log(f"decoded {len(names)} images at {size}px in {time.perf_counter() - started:.0f} s")
    return np.load(paths[0], mmap_mode="r"), np.load(paths[1], mmap_mode="r")


# --- training guard ---------------------------------------------------------------------


def warmup_cosine(step: int, total: int, *, peak: float, warmup: int, floor: float) -> float:
    """Linear warm-up from floor to peak over `warmup` steps, then cosine decay to floor."""
    if step < warmup:
        return floor + (peak - floor) * step / max(warmup, 1)
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


@dataclass
class Guard:
    """`progress` and `should_cancel` for train_segmenter: a per-batch learning-rate schedule,
    a wall-clock deadline, early stopping on validation loss, and a log line per epoch.

    With `fit_budget`, `epochs` is a maximum: after every epoch the guard plans as many
    more as the last one's duration lets finish before the deadline, stops training there
    (not halfway through an epoch), and stretches the cosine schedule over the planned
    epochs, so a slower machine still ends on an annealed model, just after fewer epochs.
    """

    model: Any
    epochs: int
    peak_lr: float
    schedule: str = "constant"  # or "cosine" (warm-up + cosine decay)
    warmup_epochs: float = 1.0
    floor_lr: float = 1e-5
    deadline: float = math.inf  # time.monotonic() value
    patience: int | None = None
    fit_budget: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = ""
    _best: float = math.inf
    _since_best: int = 0
    _done: int = 0
    _planned: int | None = None
    _epoch_started: float = field(default_factory=time.monotonic)

    def lr_at(self, step: int, batches: int) -> float:
        if self.schedule == "constant":
            return self.peak_lr
        total = (self._planned or self.epochs) * batches
        warmup = round(self.warmup_epochs * batches)
        return warmup_cosine(step, total, peak=self.peak_lr, warmup=warmup, floor=self.floor_lr)

    def initial_lr(self, batches: int) -> float:
        return self.lr_at(0, batches)

    def progress(self, event: dict[str, Any]) -> None:
        if event["event"] == "batch":
            if self.schedule != "constant":
                step = (event["epoch"] - 1) * event["batches"] + event["batch"]
                # Keras reads this variable at every step (TensorFlow and PyTorch backends).
                self.model.optimizer.learning_rate.assign(self.lr_at(step, event["batches"]))
            return
        now = time.monotonic()
        record = {k: float(v) for k, v in event.items() if isinstance(v, int | float)}
        record["seconds"] = now - self._epoch_started
        record["lr"] = float(np.asarray(self.model.optimizer.learning_rate))
        self._epoch_started = now
        self._done = int(event["epoch"])
        if self.fit_budget and math.isfinite(self.deadline):
            more = math.floor(max(self.deadline - now, 0) / max(record["seconds"], 1e-3))
            self._planned = max(min(self.epochs, self._done + more), self._done)
            record["planned_epochs"] = self._planned
        self.history.append(record)
        shown = " ".join(
            f"{k} {record[k]:.4f}" for k in ("loss", "dice", "val_loss", "val_dice") if k in record
        )
        plan = f", {self._planned} fit the budget" if self._planned else ""
        log(f"epoch {event['epoch']}/{event['epochs']}: {shown} ({record['seconds']:.0f} s{plan})")
        if "val_loss" in record:
            if record["val_loss"] < self._best:
                self._best, self._since_best = record["val_loss"], 0
            else:
                self._since_best += 1

    def should_cancel(self) -> bool:
        if self._planned is not None and self._done >= self._planned < self.epochs:
            self.stopped = f"time budget: {self._planned} epochs fit"
            return True
        if time.monotonic() > self.deadline:
            self.stopped = "time budget"
            return True
        if self.patience is not None and self._since_best >= self.patience:
            self.stopped = f"no validation improvement in {self.patience} epochs"
            return True
        return False


# --- models -----------------------------------------------------------------------------


def widths(text: str | None) -> tuple[int, ...] | None:
    """A comma-separated widths flag ("128,64,32,32,16") as integers; None stays None."""
    return None if not text else tuple(int(w) for w in str(text).split(","))


def build_model(config: dict[str, Any], *, policy: str | None = None):
    """build_segmenter(**config) under a dtype policy ("mixed_bfloat16", ...), restored after."""
    import keras

    from mlworker.nets import build_segmenter

    kwargs = dict(config)
    arch, encoder = kwargs.pop("arch"), kwargs.pop("encoder")
    previous = keras.config.dtype_policy()
    if policy:
        keras.config.set_dtype_policy(policy)
    try:
        return build_segmenter(arch, encoder, **kwargs)
    finally:
        keras.config.set_dtype_policy(previous)


def save_portable(model, config: dict[str, Any], path: Path) -> Path:
    """The trained weights in a fresh float32 model, uncompiled: a `.keras` file without
    optimizer state or mixed-precision policy, which loads under every backend."""
    clean = build_model(config)
    clean.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    clean.save(tmp)
    os.replace(tmp, path)
    return path


def split_file(path: Path, part_bytes: int) -> list[Path]:
    """PATH.part00, PATH.part01, ... of at most `part_bytes` each; `cat PATH.part* > PATH`."""
    parts = []
    with open(path, "rb") as source:
        for index in range(10_000):
            chunk = source.read(part_bytes)
            if not chunk:
                break
            part = path.with_name(f"{path.name}.part{index:02d}")
            part.write_bytes(chunk)
            parts.append(part)
    return parts


def conv_flops(model) -> int:
    """Multiply-adds x 2 of the convolution and dense layers for one image (forward pass).

    Counted from layer shapes, so it is the same on every backend: Conv2D 2·H·W·k²·Cin·Cout
    (per group), DepthwiseConv2D 2·H·W·k²·C, Dense 2·in·out per position. Elementwise layers (BatchNorm,
    activations, resizes) are left out: they are memory-bound, not matrix work.
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1] // layer.groups
            total += 2 * out[1] * out[2] * kh * kw * cin * out[-1]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * kh * kw * out[-1]
        elif isinstance(layer, keras.layers.Dense):
            shape = layer.input.shape
            positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
            total += 2 * positions * shape[-1] * layer.units
    return int(total)
