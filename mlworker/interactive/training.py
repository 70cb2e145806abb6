"""Training the click-refinement network on accepted masks, with simulated clicks.

Each training sample is (radiograph, current mask, clicks, zones) -> the accepted mask:

- The current mask starts as one of: blank; the accepted mask perturbed (eroded or dilated,
  shifted, a component dropped, a spurious blob added), standing in for an imperfect
  candidate; or the case's real candidate mask when one is given.
- Clicks follow the simulated reader (clicks.next_click) iteratively: click the largest (or,
  for variety, an area-weighted random) error region, let an ideal refinement fix that
  region (clicks.correct_region), click again, ... The last click's region is left unfixed
  in the input: that is what the network learns to correct, with earlier clicks as context.
- DeepEdit-style model iterations: for a share of each batch (`model_share`), the current
  network itself then refines the sample 1..`model_rounds` times before the gradient step,
  each time taking its own thresholded output as the new current mask and adding the
  reader's next click, so the network also learns from the masks it actually produces.
- Lung zones (when the network has the zone map) are the zones of the accepted mask for half
  of the samples, none for the rest, so the network works with and without them.
- The paper's shift/rotation augmentation on radiograph, accepted mask and candidate alike.

The loop is `train_on_batch` (the model must see its own outputs between batches, which a
`fit` data pipeline cannot offer on every backend); the project's hybrid focal + Dice loss,
Adam, and the progress callback (mlworker.progress: progress events, cancellation). Epoch
logs are means over the epoch's batches (the IoU too: a mean of batch IoUs, not the IoU of
the pooled confusion matrix).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from scipy import ndimage

from mlworker.augment import apply_affine, random_affine
from mlworker.interactive.clicks import (
    Click,
    correct_region,
    interactive_input,
    next_click,
    zones_of,
)
from mlworker.interactive.model import (
    DEFAULT_WIDTHS,
    build_interactive,
    prompt_spec,
    training_config,
)
from mlworker.predict import THRESHOLD
from mlworker.progress import Progress, TrainingCancelled, TrainingProgress
from mlworker.saved import save_model
from mlworker.train import compile_segmenter

STARTS = ("blank", "perturbed", "candidate")


def perturb_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An imperfect copy of `mask`: eroded or dilated, shifted, maybe a component dropped
    and a spurious blob added; sizes relative to the mask's side."""
    mask = np.asarray(mask, bool)
    scale = max(mask.shape) / 128
    out = mask.copy()
    steps = int(rng.integers(1, max(2, round(4 * scale)) + 1))
    if rng.random() < 0.5:
        out = ndimage.binary_dilation(out, iterations=steps)
    else:
        out = ndimage.binary_erosion(out, iterations=steps)
    shift = np.round(rng.uniform(-3, 3, 2) * scale).astype(int)
    out = np.roll(out, tuple(shift), axis=(0, 1))
    labels, n = ndimage.label(out)
    if n > 1 and rng.random() < 0.4:
        out[labels == rng.integers(1, n + 1)] = False
    if rng.random() < 0.4:
        h, w = mask.shape
        rows, cols = np.ogrid[:h, :w]
        r0, c0 = rng.uniform(0.15, 0.85) * h, rng.uniform(0.1, 0.9) * w
        a, b = rng.uniform(0.03, 0.1, 2) * (h, w)
        out |= ((rows - r0) / a) ** 2 + ((cols - c0) / b) ** 2 <= 1
    return out


def simulated_clicks(
    start: np.ndarray, truth: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[Click]]:
    """(current mask, clicks): `n` reader clicks from `start`, each region but the last one
    fixed by an ideal refinement; stops early when nothing is left to fix."""
    mask, clicks = np.asarray(start, bool), []
    for k in range(n):
        click = next_click(mask, truth, rng, pick="random" if rng.random() < 0.3 else "largest")
        if click is None:
            break
        clicks.append(click)
        if k < n - 1:
            mask = correct_region(mask, truth, click)
    return mask, clicks


@dataclass
class Sample:
    image: np.ndarray
    truth: np.ndarray
    mask: np.ndarray
    clicks: list[Click] = field(default_factory=list)
    zones: tuple[str, ...] = ()


class ClickSampler:
    """Training batches for the refinement network (see the module docstring)."""

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        candidates: Sequence[np.ndarray | None] | np.ndarray | None = None,
        *,
        radius: float,
        zones: bool,
        max_clicks: int = 5,
        augment: bool = True,
    ) -> None:
        self.images, self.masks = images, masks
        self.candidates = candidates
        self.radius, self.zones = radius, zones
        self.max_clicks, self.augment = max_clicks, augment

    def _start(self, truth, candidate, rng) -> np.ndarray:
        weights = np.array([0.25, 0.4, 0.35 if candidate is not None else 0.0])
        kind = STARTS[rng.choice(3, p=weights / weights.sum())]
        if kind == "blank":
            return np.zeros_like(truth)
        if kind == "candidate":
            return candidate
        return perturb_mask(truth, rng)

    def sample(self, i: int, rng: np.random.Generator) -> Sample:
        image = np.asarray(self.images[i], np.float32)
        truth = np.asarray(self.masks[i], bool)
        candidate = None if self.candidates is None else self.candidates[i]
        candidate = None if candidate is None else np.asarray(candidate, bool)
        if self.augment:
            affine = random_affine(rng, truth.shape)
            image = apply_affine(image, affine, order=1)
            truth = apply_affine(truth, affine, order=0)
            if candidate is not None:
                candidate = apply_affine(candidate, affine, order=0)
        start = self._start(truth, candidate, rng)
        mask, clicks = simulated_clicks(
            start, truth, int(rng.integers(1, self.max_clicks + 1)), rng
        )
        zones = zones_of(truth) if self.zones and rng.random() < 0.5 else ()
        return Sample(image, truth, mask, clicks, zones)

    def encode(self, s: Sample) -> np.ndarray:
        return interactive_input(
            s.image, s.mask, s.clicks, s.zones, radius=self.radius, with_zones=self.zones
        )

    def batch(
        self,
        indices: Sequence[int],
        rng: np.random.Generator,
        model: keras.Model | None = None,
        *,
        model_share: float = 0.0,
        model_rounds: int = 2,
    ) -> tuple[np.ndarray, np.ndarray]:
        samples = [self.sample(int(i), rng) for i in indices]
        if model is not None and model_share > 0:
            chosen = [s for s in samples if rng.random() < model_share]
            rounds = int(rng.integers(1, model_rounds + 1)) if chosen else 0
            for _ in range(rounds):
                x = np.stack([self.encode(s) for s in chosen])
                probs = np.asarray(model.predict_on_batch(x), np.float32)[..., 0]
                for s, prob in zip(chosen, probs, strict=True):
                    s.mask = prob >= THRESHOLD
                    click = next_click(s.mask, s.truth, rng)
                    if click is not None:
                        s.clicks.append(click)
        x = np.stack([self.encode(s) for s in samples])
        y = np.stack([s.truth.astype(np.float32)[..., None] for s in samples])
        return x, y


@dataclass
class InteractiveResult:
    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_done: int = 0
    cancelled: bool = False


def _check_training_data(images, masks, candidates) -> tuple[np.ndarray, np.ndarray]:
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W) greyscale in [0, 255], got {images.shape}")
    if masks.shape != images.shape:
        raise ValueError(f"masks {masks.shape} do not match images {images.shape}")
    if masks.dtype != bool and not np.isin(masks, (0, 1)).all():
        raise ValueError("masks must hold 0/1 (or bool), not e.g. 0/255")
    masks = masks.astype(bool)
    if len(images) < 2:
        raise ValueError("need at least two cases to train")
    if not masks.reshape(len(masks), -1).any(axis=1).all():
        raise ValueError("every training mask must mark some infection (leave controls out)")
    if candidates is not None:
        if len(candidates) != len(images):
            raise ValueError(f"{len(candidates)} candidates for {len(images)} images")
        for i, c in enumerate(candidates):
            if c is not None and np.shape(c) != images.shape[1:]:
                raise ValueError(f"candidate {i} has shape {np.shape(c)}, not {images.shape[1:]}")
    return images, masks


def train_interactive(
    images: np.ndarray,
    masks: np.ndarray,
    candidates: Sequence[np.ndarray | None] | np.ndarray | None = None,
    *,
    epochs: int = 20,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    model: keras.Model | None = None,
    zones: bool = True,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    max_clicks: int = 5,
    model_share: float = 0.5,
    model_rounds: int = 2,
    augment: bool = True,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> InteractiveResult:
    """Trains a refinement network on radiographs (N, S, S) in [0, 255] and their accepted
    masks (every one non-empty), optionally with each case's candidate mask (or None).

    `model` continues a network (build_interactive) instead of building one at size S.
    The first epoch runs without model iterations (the network knows nothing yet).
    """
    if epochs < 1 or batch_size < 2 or not lr > 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 2, lr > 0 (got {epochs}, {batch_size}, {lr})"
        )
    if not 0 <= model_share <= 1 or model_rounds < 1 or max_clicks < 1:
        raise ValueError("need 0 <= model_share <= 1, model_rounds >= 1, max_clicks >= 1")
    images, masks = _check_training_data(images, masks, candidates)
    keras.utils.set_random_seed(seed)
    if model is None:
        if images.shape[1] != images.shape[2]:
            raise ValueError(f"images must be square, got {images.shape[1:]}")
        model = build_interactive(int(images.shape[1]), zones=zones, widths=widths)
    size, radius, with_zones = prompt_spec(model)
    if images.shape[1:] != (size, size):
        raise ValueError(f"the model takes {size}x{size} images, the data is {images.shape[1:]}")
    compile_segmenter(model, lr=lr)
    sampler = ClickSampler(
        images, masks, candidates, radius=radius, zones=with_zones,
        max_clicks=max_clicks, augment=augment,
    )  # fmt: skip
    # A lone trailing case joins the previous batch (one image makes poor BatchNorm statistics).
    full, rest = divmod(len(images), batch_size)
    n_batches = full if rest == 1 and full else full + (rest > 0)
    callback = TrainingProgress(
        epochs=epochs, batches=n_batches, progress=progress, should_cancel=should_cancel
    )
    callback.set_model(model)
    done = 0
    try:
        for epoch in range(epochs):
            order = np.random.default_rng([seed, epoch]).permutation(len(images))
            callback.on_epoch_begin(epoch)
            # train_on_batch resets the metrics on every call: the logs reported are the mean
            # of the batch values so far this epoch.
            sums: dict[str, float] = {}
            logs: dict[str, float] = {}
            for b in range(n_batches):
                end = (b + 1) * batch_size if b < n_batches - 1 else len(images)
                rng = np.random.default_rng([seed, epoch, b, 1])
                x, y = sampler.batch(
                    order[b * batch_size : end], rng, model if epoch else None,
                    model_share=model_share, model_rounds=model_rounds,
                )  # fmt: skip
                for key, value in model.train_on_batch(x, y, return_dict=True).items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                logs = {key: total / (b + 1) for key, total in sums.items()}
                callback.on_train_batch_end(b, logs)
            callback.on_epoch_end(epoch, logs)
            done = epoch + 1
    except TrainingCancelled:
        return InteractiveResult(model, callback.history, done, cancelled=True)
    return InteractiveResult(model, callback.history, done)


def train_interactive_file(
    *,
    images: np.ndarray,
    masks: np.ndarray,
    out: str | os.PathLike,
    candidates: Sequence[np.ndarray | None] | np.ndarray | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """What a worker job calls: `train_interactive(images, masks, candidates, **kwargs)`,
    the network written to `out` (.keras, written whole or not at all) unless training was
    cancelled; returns what to record (the network's encoding, epochs, history)."""
    out = Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"the model file must end in .keras, got {out}")
    if not out.parent.is_dir():
        raise ValueError(f"the folder of {out} does not exist")
    result = train_interactive(images, masks, candidates, **kwargs)
    info = training_config(result.model) | {
        "epochs": result.epochs_done,
        "cancelled": result.cancelled,
        "train_cases": len(images),
        "with_candidates": candidates is not None,
        "history": result.history,
    }
    if not result.cancelled:
        tmp = out.with_name(f".tmp-{out.name}")  # Keras insists on the .keras suffix
        save_model(result.model, tmp)
        os.replace(tmp, out)
        info["path"] = str(out)
    return info
