"""Candidates: probability maps and binary masks from a trained segmenter.

Each radiograph is resized to the network's input size, predicted in batches, and its
probability map resized back to the radiograph's own (working) resolution. Maps are
stored as 8-bit greyscale PNGs (quantisation error at most 1/510, a few kB per case);
masks, thresholded at 0.5 as in the paper, as 1-bit PNGs (cxrio.masks.mask_to_png).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from PIL import Image

from mlworker.augment import to_model_input

THRESHOLD = 0.5


def model_input_size(model: keras.Model) -> tuple[int, int] | None:
    """(H, W) the model takes, or None when it accepts any size."""
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    h, w = shape[1], shape[2]
    return None if h is None or w is None else (int(h), int(w))


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (H, W) or (H, W, C) to size (h, w), as float32."""
    if array.shape[:2] == size:
        return array.astype(np.float32)
    if array.ndim == 3:
        return np.stack([_resize(array[..., c], size) for c in range(array.shape[-1])], axis=-1)
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))  # mode F
    return np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR), np.float32)


def _mask_output(output: Any) -> np.ndarray:
    # Deep-supervised models return several maps; the last one is the final mask.
    if isinstance(output, dict):
        output = output.get("mask", list(output.values())[-1])
    if isinstance(output, list | tuple):
        output = output[-1]
    return np.asarray(output, dtype=np.float32)


def predict_probabilities(
    model: keras.Model,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    batch_size: int = 16,
    progress: Callable[[dict[str, int]], None] | None = None,
    mirror: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """Infection probability maps in [0, 1], one (H, W) float32 per image, at each image's
    own resolution. Images are (H, W) greyscale or (H, W, 3) RGB in [0, 255].

    `mirror` (test-time augmentation) averages each map with the map of the left-right
    mirrored radiograph, mirrored back. A mirrored chest is anatomically wrong (heart on the
    right) but its lungs are still lungs; vertical flips and large rotations are not offered,
    since they put the lung bases where apices are. It costs twice the inference.

    Returns an (N, H, W) array for an array input, a list for a list of images.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    as_array = isinstance(images, np.ndarray)
    items = [np.asarray(img) for img in images]
    for i, img in enumerate(items):
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (1, 3)):
            raise ValueError(f"image {i} must be (H, W) or (H, W, 1|3), got shape {img.shape}")
    size = model_input_size(model)
    if size is None:
        # A size-agnostic model: batch only images that share a size.
        batch_size = 1 if len({img.shape[:2] for img in items}) > 1 else batch_size
    n_batches = math.ceil(len(items) / batch_size)
    out: list[np.ndarray] = []
    for b in range(n_batches):
        chunk = items[b * batch_size : (b + 1) * batch_size]
        x = np.stack([to_model_input(_resize(img, size) if size else img) for img in chunk])
        probs = _mask_output(model.predict_on_batch(x))[..., 0]
        if mirror:
            mirrored = _mask_output(model.predict_on_batch(np.ascontiguousarray(x[:, :, ::-1])))
            probs = 0.5 * (probs + mirrored[..., 0][:, :, ::-1])
        for img, prob in zip(chunk, probs, strict=True):
            out.append(np.clip(_resize(prob, img.shape[:2]), 0.0, 1.0))
        if progress is not None:
            progress({"batch": b + 1, "batches": n_batches, "done": len(out), "total": len(items)})
    if as_array:
        return np.stack(out) if out else np.zeros(images.shape[:3], np.float32)
    return out


def binarize(prob: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Pixels at or above `threshold` are infection (the paper's 0.5 rule)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    return np.asarray(prob) >= threshold
