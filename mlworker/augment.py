"""Training-time augmentation and the batch feeder.

The paper augments with random shifts of up to 10 % on both axes and rotations of up to
10 degrees, filling the uncovered border with the nearest pixel. The same transform is
applied to a radiograph and its mask: bilinear for the image, nearest-neighbour for the
mask, so the mask keeps exactly the values it had (it stays binary).

Transforms run in numpy/scipy on the host, so they are identical on every Keras backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from scipy import ndimage

SHIFT_FRACTION = 0.1
ROTATION_DEGREES = 10.0


@dataclass(frozen=True)
class Affine:
    """One draw of the augmentation: rotation in degrees, shifts in pixels (rows, cols)."""

    angle: float
    shift_rows: float
    shift_cols: float


def random_affine(
    rng: np.random.Generator,
    shape: tuple[int, int],
    *,
    shift: float = SHIFT_FRACTION,
    rotation: float = ROTATION_DEGREES,
) -> Affine:
    """Draws a rotation in [-rotation, rotation] and shifts in ±shift of each axis."""
    rows, cols = shape
    return Affine(
        angle=float(rng.uniform(-rotation, rotation)),
        shift_rows=float(rng.uniform(-shift, shift) * rows),
        shift_cols=float(rng.uniform(-shift, shift) * cols),
    )


def apply_affine(array: np.ndarray, affine: Affine, *, order: int) -> np.ndarray:
    """Rotates `array` (H, W) or (H, W, C) about its centre, then shifts it.

    `order` is the spline order: 1 (bilinear) for images, 0 (nearest) for masks.
    """
    if array.ndim == 3:
        return np.stack(
            [apply_affine(array[..., c], affine, order=order) for c in range(array.shape[-1])],
            axis=-1,
        )
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {array.shape}")
    theta = math.radians(affine.angle)
    # scipy maps each output coordinate o to the input coordinate M @ o + offset, so we
    # give it the inverse of "rotate about the centre c, then shift by t":
    #   i = R^-1 (o - c - t) + c
    inverse = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    centre = (np.array(array.shape, dtype=float) - 1) / 2
    shift = np.array([affine.shift_rows, affine.shift_cols])
    offset = centre - inverse @ (centre + shift)
    out_dtype = array.dtype if order == 0 else np.float32
    source = array.astype(np.uint8) if array.dtype == bool else array
    result = ndimage.affine_transform(
        source, inverse, offset=offset, order=order, mode="nearest", output=out_dtype
    )
    return result.astype(bool) if array.dtype == bool else result


def augment_pair(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The same random shift + rotation on a radiograph and its mask.

    Returns the image as float32 (bilinear) and the mask in its own dtype (nearest).
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    affine = random_affine(rng, image.shape[:2])
    return apply_affine(image, affine, order=1), apply_affine(mask, affine, order=0)


def balance_by_augmentation(
    covid_idx: Sequence[int], control_idx: Sequence[int], *, seed: int = 0
) -> np.ndarray:
    """Indices for detection training with COVID-19 cases repeated up to the controls.

    Every COVID-19 case appears once, then whole rounds of repeats, then a random draw
    (without replacement) for the remainder, so no case is repeated more than one time
    more than another. `CaseBatches` augments every repeat (a position whose index already
    appeared earlier), each with its own random transform, as the paper did.
    """
    covid = np.asarray(covid_idx, dtype=np.int64)
    control = np.asarray(control_idx, dtype=np.int64)
    if np.intersect1d(covid, control).size:
        raise ValueError("a case cannot be both COVID-19 and control")
    extra = len(control) - len(covid)
    if len(covid) == 0 or extra <= 0:
        return np.concatenate([covid, control])
    rng = np.random.default_rng(seed)
    rounds, rest = divmod(extra, len(covid))
    repeats = [np.tile(covid, rounds), rng.choice(covid, size=rest, replace=False)]
    return np.concatenate([covid, *repeats, control])


class CaseBatches(keras.utils.PyDataset):
    """Batches of (images float32 (B, H, W, 3) in [0, 255], masks float32 (B, H, W, 1)).

    `indices` picks (and may repeat) cases; repeats are always augmented. A batch is a
    pure function of (seed, epoch, batch number), so runs are repeatable whatever order
    or thread the backend fetches batches in. `epoch` advances on every `on_epoch_end`;
    the trainer also sets it at the start of each epoch, so a resumed run sees the same
    stream as an uninterrupted one.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        *,
        batch_size: int,
        indices: Sequence[int] | None = None,
        augment: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        start_epoch: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        images, masks = np.asarray(images), np.asarray(masks)
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise ValueError(f"images must be (N, H, W) or (N, H, W, 1|3), got {images.shape}")
        if masks.ndim == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        if masks.shape != images.shape[:3]:
            raise ValueError(f"masks {masks.shape} do not match images {images.shape[:3]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.images, self.masks = images, masks
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices, int)
        if self.indices.size == 0:
            raise ValueError("no cases to feed")
        if self.indices.min() < 0 or self.indices.max() >= len(images):
            raise ValueError(f"indices must lie in [0, {len(images)})")
        _, first = np.unique(self.indices, return_index=True)
        self.is_repeat = np.ones(len(self.indices), dtype=bool)
        self.is_repeat[first] = False
        self.batch_size = int(batch_size)
        self.augment, self.shuffle, self.seed = augment, shuffle, int(seed)
        self.epoch = int(start_epoch)

    def __len__(self) -> int:
        full, rest = divmod(len(self.indices), self.batch_size)
        # A lone trailing case joins the previous batch: PyTorch's CPU convolutions cannot
        # backpropagate some batches of one, and one image makes poor BatchNorm statistics.
        return full if rest == 1 and full else full + (rest > 0)

    def order(self) -> np.ndarray:
        """Positions into `indices` in this epoch's order."""
        if not self.shuffle:
            return np.arange(len(self.indices))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.indices))

    def __getitem__(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= batch < len(self):
            raise IndexError(batch)
        end = (batch + 1) * self.batch_size if batch < len(self) - 1 else len(self.indices)
        positions = self.order()[batch * self.batch_size : end]
        rng = np.random.default_rng([self.seed, self.epoch, batch, 1])
        xs, ys = [], []
        for pos in positions:
            image = self.images[self.indices[pos]]
            mask = self.masks[self.indices[pos]]
            if self.augment or self.is_repeat[pos]:
                image, mask = augment_pair(image, mask, rng)
            xs.append(to_model_input(image))
            ys.append(np.asarray(mask, dtype=np.float32)[..., None])
        return np.stack(xs), np.stack(ys)

    def on_epoch_end(self) -> None:
        self.epoch += 1


def to_model_input(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) in [0, 255] -> float32 (H, W, 3): nets take RGB."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image
