"""What every model task needs: cases and masks from storage, checkpoints that outlive a
worker, trained models from the registry."""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from annotation.models import Job, Mask, ModelVersion, Radiograph
from annotation.services.model_versions import model_version_register, model_version_weights_fetch
from annotation.worker.runner import JobContext
from cxrio import masks as maskio

log = logging.getLogger(__name__)

# Training needs hours on real data; a shard of predictions minutes.
TRAIN_LIMITS = {"soft_time_limit": 24 * 3600, "time_limit": 24 * 3600 + 300}
PREDICT_LIMITS = {"soft_time_limit": 2 * 3600, "time_limit": 2 * 3600 + 120}
PREDICT_BATCH = 16
TASK_OPTIONS = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
}


# --- data from storage -------------------------------------------------------------
def _read_grey(path: str) -> Image.Image:
    with default_storage.open(path, "rb") as handle:
        image = Image.open(io.BytesIO(handle.read()))
        image.load()
    return image.convert("L")


def load_image(radiograph: Radiograph, size: tuple[int, int]) -> np.ndarray:
    """The display image resized to (height, width), uint8."""
    image = _read_grey(radiograph.display.name)
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def load_mask(mask: Mask, size: tuple[int, int] | None = None) -> np.ndarray:
    with default_storage.open(mask.png.name, "rb") as handle:
        pixels = maskio.mask_from_png(handle.read())
    if size is not None:
        pixels = maskio.resize_nearest(pixels, width=size[1], height=size[0])
    return pixels


def load_cases(
    pairs: list[list[int | None]], size: int, ctx: JobContext, *, span: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, masks (empty for controls) and COVID-19 labels at size × size, in order."""
    radiographs = Radiograph.objects.in_bulk([r for r, _ in pairs])
    masks = Mask.objects.in_bulk([m for _, m in pairs if m is not None])
    images = np.zeros((len(pairs), size, size), np.uint8)
    labels = np.zeros((len(pairs), size, size), bool)
    covid = np.zeros(len(pairs), bool)
    for i, (r, m) in enumerate(pairs):
        images[i] = load_image(radiographs[r], (size, size))
        if m is not None:
            labels[i] = load_mask(masks[m], (size, size))
            covid[i] = True
        low, high = span
        ctx.progress(low + (high - low) * (i + 1) / len(pairs), phase="loading data")
    return images, labels, covid


# --- checkpoints that outlive the worker -------------------------------------------------
def _checkpoint_prefix(job: Job) -> str:
    return f"jobs/{job.pk}/checkpoint"


def checkpoint_download(job: Job, local: Path) -> None:
    """Bring a checkpoint another (dead) worker left in storage to this machine."""
    prefix = _checkpoint_prefix(job)
    try:
        _dirs, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return
    local.mkdir(parents=True, exist_ok=True)
    for name in files:
        target = local / name
        if not target.exists():
            with default_storage.open(f"{prefix}/{name}", "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def checkpoint_upload(job: Job, local: Path) -> None:
    """Mirror the local checkpoint folder to storage: state.json last, it names the epoch."""
    prefix = _checkpoint_prefix(job)
    names = sorted(p.name for p in local.iterdir() if p.is_file())
    names.sort(key=lambda n: n == "state.json")
    for name in names:
        path = f"{prefix}/{name}"
        if name != "state.json" and default_storage.exists(path):
            continue
        if default_storage.exists(path):
            default_storage.delete(path)
        with open(local / name, "rb") as handle:
            default_storage.save(path, ContentFile(handle.read()))
    keep = set(names)
    try:
        for stale in default_storage.listdir(prefix)[1]:
            if stale not in keep:
                default_storage.delete(f"{prefix}/{stale}")
    except FileNotFoundError:
        pass


def work_dir(job: Job) -> Path:
    base = Path(getattr(settings, "WORKER_SCRATCH_DIR", None) or settings.VAR_DIR / "work")
    return base / f"job-{job.pk}"


# --- progress, registration and loading of trained networks -------------------------------
def number(value: Any) -> Any:
    """JSON-ready numbers for progress details (numpy floats, rounded)."""
    return round(float(value), 5) if isinstance(value, np.floating | float) else value


def training_reporter(ctx: JobContext, *, span: tuple[float, float], on_epoch=None):
    """A `progress` callback for mlworker.train: job progress within `span`, epoch/batch/loss,
    ETA, and the per-epoch curve. `on_epoch` runs before the epoch is reported (to put its
    checkpoint in storage first)."""
    low, high = span
    curve = [row for row in ctx.job.progress_detail.get("curve", []) if isinstance(row, dict)]
    started, start_fraction = time.monotonic(), None

    def report(info: dict[str, Any]) -> None:
        nonlocal start_fraction
        batches = max(1, info.get("batches") or 1)
        fraction = min(1.0, (info["epoch"] - 1 + info["batch"] / batches) / info["epochs"])
        start_fraction = fraction if start_fraction is None else start_fraction
        detail = {
            "phase": "training",
            "epoch": info["epoch"],
            "epochs": info["epochs"],
            "batch": info["batch"],
            "batches": batches,
            "loss": number(info.get("loss")),
        }
        if fraction > start_fraction:
            rate = (time.monotonic() - started) / (fraction - start_fraction)
            detail["eta_s"] = round(rate * (1.0 - fraction))
        if info["event"] == "epoch":
            if on_epoch is not None:
                on_epoch()
            row = {
                k: number(v)
                for k, v in info.items()
                if k not in ("event", "batch", "batches", "epochs")
            }
            curve[:] = [r for r in curve if r.get("epoch") != info["epoch"]] + [row]
            ctx.progress(low + (high - low) * fraction, force=True, curve=curve, **detail)
        else:
            ctx.progress(low + (high - low) * fraction, **detail)

    return report


def history_curve(history: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The per-epoch curve (epoch, loss, metrics) from a Keras-style history of lists."""
    epochs = max((len(values) for values in history.values()), default=0)
    return [
        {"epoch": i + 1}
        | {key: number(values[i]) for key, values in history.items() if i < len(values)}
        for i in range(epochs)
    ]


def register_model(
    ctx: JobContext,
    model,
    *,
    purpose: str,
    arch: str,
    encoder: str,
    training: list[list[int]],
    metrics: dict[str, Any],
) -> ModelVersion:
    """Save the trained network and register it as the job's model."""
    from mlworker.saved import save_model

    folder = work_dir(ctx.job)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "final.keras"
    trainable, frozen = save_model(model, path)
    mv = model_version_register(
        job=ctx.job,
        weights=path,
        purpose=purpose,
        arch=arch,
        encoder=encoder,
        training=training,
        metrics=metrics,
        params_trainable=trainable,
        params_non_trainable=frozen,
    )
    shutil.rmtree(folder, ignore_errors=True)
    return mv


MODELS_KEPT = 2  # e.g. the deployed detector and its classifier stay loaded between requests
_LOADED: OrderedDict[int, Any] = OrderedDict()


def load_model_version(mv: ModelVersion):
    """A registered network, checked against its sha256 and kept loaded in this worker process
    (the last few used)."""
    from mlworker.saved import load_model

    if mv.pk in _LOADED:
        _LOADED.move_to_end(mv.pk)
        return _LOADED[mv.pk]
    with tempfile.TemporaryDirectory() as tmp:
        path = model_version_weights_fetch(model_version=mv, target=Path(tmp) / "model.keras")
        model = load_model(path)
    _LOADED[mv.pk] = model
    while len(_LOADED) > MODELS_KEPT:
        _LOADED.popitem(last=False)
    return model
