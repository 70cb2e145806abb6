"""What every model task needs: cases and masks from storage, checkpoints that outlive a
worker, trained models from the registry."""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image

from annotation import masks as maskio
from annotation.jobrunner import JobContext
from annotation.models import Job, Mask, ModelVersion, Radiograph

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


def load_training_set(
    pairs: list[list[int]], size: int, ctx: JobContext
) -> tuple[np.ndarray, np.ndarray]:
    radiographs = Radiograph.objects.in_bulk([r for r, _ in pairs])
    masks = Mask.objects.in_bulk([m for _, m in pairs])
    images = np.zeros((len(pairs), size, size), np.uint8)
    labels = np.zeros((len(pairs), size, size), bool)
    for i, (r, m) in enumerate(pairs):
        images[i] = load_image(radiographs[r], (size, size))
        labels[i] = load_mask(masks[m], (size, size))
        ctx.progress(
            0.02 * (i + 1) / len(pairs), phase="loading data", done=i + 1, total=len(pairs)
        )
    return images, labels


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_MODELS: dict[int, Any] = {}


def load_model_version(mv: ModelVersion):
    """The trained network, cached per worker process (a shard after a shard reuses it)."""
    import keras

    if mv.pk not in _MODELS:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            with default_storage.open(mv.weights.name, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            if mv.weights_sha256 and sha256_file(path) != mv.weights_sha256:
                raise ValueError(f"weights of model #{mv.pk} do not match their sha256")
            _MODELS.clear()
            _MODELS[mv.pk] = keras.saving.load_model(path)
    return _MODELS[mv.pk]
