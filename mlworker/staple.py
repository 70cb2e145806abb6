"""STAPLE consensus of binary masks (Warfield, Zou & Wells 2004), by SimpleITK's filter.

Given several raters' masks of one image (the stage's networks, or readers' drawings), STAPLE
estimates by expectation–maximisation the probability that each pixel is truly infected, and
each rater's sensitivity and specificity. The consensus mask is that probability ≥ 0.5.

SimpleITK is imported on first use only, so modules that import this one stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONSENSUS_THRESHOLD = 0.5


@dataclass(frozen=True)
class Staple:
    probability: np.ndarray  # float64 (H, W): estimated probability of infection per pixel
    mask: np.ndarray  # bool (H, W): probability ≥ CONSENSUS_THRESHOLD
    sensitivity: tuple[float, ...]  # per rater, in the order given
    specificity: tuple[float, ...]
    iterations: int


def staple(masks: Sequence[np.ndarray], *, max_iterations: int = 100) -> Staple:
    """The STAPLE consensus of two or more same-shaped 2-D masks (bool, or nonzero = inside)."""
    arrays = [np.asarray(m) != 0 for m in masks]
    if len(arrays) < 2:
        raise ValueError(f"STAPLE combines two or more masks, got {len(arrays)}")
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        raise ValueError(
            "STAPLE needs 2-D masks of one shape, got " + ", ".join(str(a.shape) for a in arrays)
        )
    if all(np.array_equal(a, arrays[0]) for a in arrays[1:]):
        # Unanimous (including all empty, where the EM has nothing to estimate): the consensus is
        # the common mask and every rater is perfect on it.
        ones = (1.0,) * len(arrays)
        return Staple(arrays[0].astype(np.float64), arrays[0].copy(), ones, ones, 0)
    import SimpleITK as sitk

    images = [sitk.GetImageFromArray(a.astype(np.uint8)) for a in arrays]
    staple_filter = sitk.STAPLEImageFilter()
    staple_filter.SetForegroundValue(1)
    staple_filter.SetMaximumIterations(max_iterations)
    probability = sitk.GetArrayFromImage(staple_filter.Execute(images)).astype(np.float64)
    probability = np.nan_to_num(probability, nan=0.0)
    return Staple(
        probability=probability,
        mask=probability >= CONSENSUS_THRESHOLD,
        sensitivity=tuple(float(v) for v in staple_filter.GetSensitivity()),
        specificity=tuple(float(v) for v in staple_filter.GetSpecificity()),
        iterations=int(staple_filter.GetElapsedIterations()),
    )
