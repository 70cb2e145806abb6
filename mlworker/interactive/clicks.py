"""Clicks on a radiograph: how a click becomes network input, and where a simulated reader clicks.

Encoding. A click is a (row, col) pixel and a label: positive ("this is infection") or
negative ("this is not"). `click_maps` draws every click as a filled disk of `radius` pixels
in its own channel, positive or negative; overlapping disks of one label merge (maximum).
Disks rather than distance maps: disk encoding trains as well as or better than Euclidean
distance maps in the interactive-segmentation literature (Benenson et al. 2019; RITM, Sofiiuk
et al. 2022), needs no clipping constant, and is cheap to draw at serving time.

Zones. The six lung zones (upper, middle, lower of the right and left lung) are an optional
coarse prompt. They are drawn as one zone map: the image split into thirds from top to bottom
and halves from side to side, 1 over the chosen zones. Frontal radiographs are viewed with the
patient's right on the image's left, so "right_*" zones are the left half of the image. The
grid does not follow the lungs; it is a coarse hint, not a segmentation.

Simulation. `next_click` is the simulated reader of DeepEdit / RITM: it clicks the interior
point (largest distance to the region's border) of the largest error region; a missed region
(false negative) gets a positive click, a spurious one (false positive) a negative click.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

ZONES: tuple[str, ...] = (
    "right_upper",
    "right_middle",
    "right_lower",
    "left_upper",
    "left_middle",
    "left_lower",
)
# Base channels: radiograph, current mask, positive clicks, negative clicks; then the zone map.
BASE_CHANNELS = 4
# True and False also match 1 and 0 (and numpy booleans and integers), which compare equal.
POSITIVE_LABELS = {True, "positive", "pos", "+"}
NEGATIVE_LABELS = {False, "negative", "neg", "-"}


@dataclass(frozen=True)
class Click:
    """One click at pixel (row, col); positive marks infection, negative marks its absence."""

    row: int
    col: int
    positive: bool

    @classmethod
    def of(cls, value: Click | Sequence) -> Click:
        """A Click from a Click or a (row, col, label) triple; label True/False, 1/0,
        "positive"/"negative" (or "pos"/"neg", "+"/"-"). Anything else is a ValueError."""
        if isinstance(value, Click):
            return value
        try:
            row, col, label = value
        except (TypeError, ValueError):
            raise ValueError(f"a click is (row, col, label), not {value!r}") from None
        for coord in (row, col):
            if isinstance(coord, bool) or not float(coord).is_integer():
                raise ValueError(f"click coordinates must be whole pixels, not {value!r}")
        if isinstance(label, str):
            label = label.lower()
        if label in POSITIVE_LABELS and not isinstance(label, float):
            positive = True
        elif label in NEGATIVE_LABELS and not isinstance(label, float):
            positive = False
        else:
            raise ValueError(
                f"click label must be positive or negative (True/False, 1/0), not {label!r}"
            )
        return cls(int(row), int(col), positive)


def as_clicks(clicks: Iterable[Click | Sequence], shape: tuple[int, int]) -> list[Click]:
    """`clicks` as Click objects, each checked to lie inside an image of `shape`."""
    out = []
    for i, value in enumerate(clicks):
        click = Click.of(value)
        if not (0 <= click.row < shape[0] and 0 <= click.col < shape[1]):
            raise ValueError(
                f"click {i} at (row {click.row}, col {click.col}) lies outside the "
                f"{shape[0]}x{shape[1]} image"
            )
        out.append(click)
    return out


def click_maps(
    clicks: Iterable[Click | Sequence], shape: tuple[int, int], radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) float32 maps of `shape`: 1 within `radius` pixels of a click of
    that label (a disk, centre included), 0 elsewhere."""
    if not radius > 0:
        raise ValueError(f"click radius must be positive, got {radius}")
    shape = (int(shape[0]), int(shape[1]))
    maps = np.zeros((2, *shape), np.float32)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    for click in as_clicks(clicks, shape):
        disk = (rows - click.row) ** 2 + (cols - click.col) ** 2 <= radius**2
        maps[0 if click.positive else 1][disk] = 1.0
    return maps[0], maps[1]


def _zone_slices(shape: tuple[int, int]) -> dict[str, tuple[slice, slice]]:
    h, w = shape
    bands = [slice(round(h * i / 3), round(h * (i + 1) / 3)) for i in range(3)]
    halves = {"right": slice(0, w // 2), "left": slice(w // 2, w)}  # patient's right: image left
    return {
        f"{side}_{level}": (band, halves[side])
        for side in ("right", "left")
        for level, band in zip(("upper", "middle", "lower"), bands, strict=True)
    }


def check_zones(zones: Iterable[str] | None) -> tuple[str, ...]:
    """The zone names in ZONES order; an unknown name is a ValueError."""
    chosen = set(zones or ())
    unknown = sorted(chosen - set(ZONES))
    if unknown:
        raise ValueError(f"unknown lung zone(s) {', '.join(unknown)}; valid: {', '.join(ZONES)}")
    return tuple(z for z in ZONES if z in chosen)


def zone_map(zones: Iterable[str] | None, shape: tuple[int, int]) -> np.ndarray:
    """float32 map of `shape`, 1 over the chosen zones' thirds/halves of the image."""
    out = np.zeros(shape, np.float32)
    slices = _zone_slices(shape)
    for zone in check_zones(zones):
        out[slices[zone]] = 1.0
    return out


def zones_of(mask: np.ndarray, *, min_share: float = 0.05) -> tuple[str, ...]:
    """The zones holding at least `min_share` of the mask's pixels (what a reader would tick)."""
    mask = np.asarray(mask, bool)
    total = int(mask.sum())
    if total == 0:
        return ()
    return tuple(
        zone
        for zone, where in _zone_slices(mask.shape).items()
        if mask[where].sum() >= min_share * total
    )


def _plane(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] in (1, 3):
        array = array[..., 0] if array.shape[-1] == 1 else array.mean(axis=-1)
    if array.ndim != 2:
        raise ValueError(f"{name} must be (H, W), (H, W, 1) or (H, W, 3), got shape {array.shape}")
    return array


def interactive_input(
    image: np.ndarray,
    mask: np.ndarray | None,
    clicks: Iterable[Click | Sequence],
    zones: Iterable[str] | None = None,
    *,
    radius: float,
    with_zones: bool = True,
) -> np.ndarray:
    """The network input for one case, float32 (H, W, 4 or 5): radiograph in [0, 1] (from
    [0, 255] pixels), current mask (0/1; None = blank), positive and negative click disks,
    and (with_zones) the zone map. Zones given to a model without a zone channel are an error.
    """
    image = _plane(image, "image").astype(np.float32)
    shape = image.shape
    if mask is None:
        mask = np.zeros(shape, np.float32)
    mask = _plane(mask, "mask")
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {shape}")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise ValueError("mask must hold 0/1 (or bool)")
    positive, negative = click_maps(clicks, shape, radius)
    planes = [image / 255.0, mask.astype(np.float32), positive, negative]
    if with_zones:
        planes.append(zone_map(zones, shape))
    elif check_zones(zones):
        raise ValueError("this model takes no lung zones")
    return np.stack(planes, axis=-1)


def _binary(array: np.ndarray, name: str) -> np.ndarray:
    array = _plane(array, name)
    return array if array.dtype == bool else array != 0


def interior_point(region: np.ndarray, rng: np.random.Generator | None = None) -> tuple[int, int]:
    """The pixel of `region` farthest from its border (the image edge counts as border);
    ties broken by `rng`, else the first in row order."""
    padded = np.pad(region, 1)
    distance = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    best = np.flatnonzero(distance == distance.max())
    pick = best[0] if rng is None else rng.choice(best)
    row, col = np.unravel_index(pick, region.shape)
    return int(row), int(col)


def error_regions(pred: np.ndarray, truth: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Connected error regions (8-connected), largest first, each with the label a click on
    it gets: (region, True) for missed infection, (region, False) for spurious infection."""
    pred, truth = _binary(pred, "pred"), _binary(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    regions = []
    for errors, positive in ((truth & ~pred, True), (pred & ~truth, False)):
        labels, n = ndimage.label(errors, structure=np.ones((3, 3)))
        if n:
            sizes = np.bincount(labels.ravel())[1:]
            regions.extend((labels == k + 1, positive, int(sizes[k])) for k in range(n))
    regions.sort(key=lambda r: -r[2])
    return [(region, positive) for region, positive, _ in regions]


def next_click(
    pred: np.ndarray,
    truth: np.ndarray,
    rng: np.random.Generator | None = None,
    *,
    pick: str = "largest",
) -> Click | None:
    """Where a reader clicks next: the interior point of the largest error region, positive
    on a missed region, negative on a spurious one; None when `pred` equals `truth`.

    pick="random" (training) chooses the region at random with probability proportional to
    its area instead of always the largest.
    """
    if pick not in ("largest", "random"):
        raise ValueError(f"pick must be 'largest' or 'random', not {pick!r}")
    regions = error_regions(pred, truth)
    if not regions:
        return None
    if pick == "random" and rng is not None and len(regions) > 1:
        areas = np.array([region.sum() for region, _ in regions], float)
        region, positive = regions[rng.choice(len(regions), p=areas / areas.sum())]
    else:
        region, positive = regions[0]
    row, col = interior_point(region, rng)
    return Click(row, col, positive)


def correct_region(pred: np.ndarray, truth: np.ndarray, click: Click) -> np.ndarray:
    """`pred` with the error region under `click` set to the truth: what an ideal refinement
    does with that click (the training simulation's stand-in for a model)."""
    pred, truth = _binary(pred, "pred"), _binary(truth, "truth")
    errors = (truth & ~pred) if click.positive else (pred & ~truth)
    labels, _ = ndimage.label(errors, structure=np.ones((3, 3)))
    k = labels[click.row, click.col]
    out = pred.copy()
    if k:
        out[labels == k] = click.positive
    return out
