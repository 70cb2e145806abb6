"""Helpers shared by the import tests: what is in the database and in storage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from annotation.models import Dataset, Mask, Radiograph
from annotation.storage import blob_read, stored_paths
from tests.annotation import cxrfiles


def state() -> tuple[int, int, int, list[str]]:
    """Row counts and every stored file: what 'nothing changed' is checked against."""
    return (
        Dataset.objects.count(),
        Radiograph.objects.count(),
        Mask.objects.count(),
        stored_paths(),
    )


def stored_image(path: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob_read(path))))


def rect_mask(height: int, width: int, seed: int) -> np.ndarray:
    """A patchy infection mask that differs per seed."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), dtype=bool)
    for _ in range(3):
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        mask[top : top + height // 4, left : left + width // 5] = True
    return mask


def write_case(folder: Path, name: str, *, size: tuple[int, int], seed: int, masks: str | None):
    """An image at folder/Images/name and, when masks names a folder, its mask_ file there."""
    height, width = size
    (folder / "Images").mkdir(parents=True, exist_ok=True)
    (folder / "Images" / name).write_bytes(cxrfiles.png8(height, width))
    mask = rect_mask(height, width, seed)
    if masks:
        (folder / masks).mkdir(parents=True, exist_ok=True)
        (folder / masks / f"mask_{name}").write_bytes(cxrfiles.mask_png(mask))
    return mask
