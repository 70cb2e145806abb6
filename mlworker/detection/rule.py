"""The detection rule: COVID-19 and severity from a probability map Ŷ.

Degerli et al. 2021, section "COVID-19 detection": a CXR is classified COVID-19 when at
least one pixel of its infection map is at or above 0.5. Severity grading follows the
paper's use of the infection map: the share of the image (or of the lung field, when a
lung mask is given) the network marks infected. Pure numpy: no Keras import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

DEFAULT_THRESHOLD = 0.5  # paper: "if any pixel of Ŷ ≥ 0.5"


@dataclass(frozen=True)
class Detection:
    covid: bool
    max_prob: float
    severity: float  # infected fraction in [0, 1]
    severity_basis: Literal["image", "lung"]


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1] (got {threshold})")
    return threshold


def detect(
    prob: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    lung_mask: np.ndarray | None = None,
) -> Detection:
    """Detect COVID-19 on one CXR from its probability map Ŷ (HxW, float in [0, 1]).

    The decision uses the whole image, as in the paper; the lung mask (same HxW, bool
    or 0/1) only changes the severity denominator.
    """
    threshold = _check_threshold(threshold)
    prob = np.asarray(prob)
    if prob.ndim == 3 and prob.shape[2] == 1:
        prob = prob[..., 0]
    if prob.ndim != 2 or prob.size == 0:
        raise ValueError(f"prob must be a non-empty HxW map (got shape {prob.shape})")
    if not np.issubdtype(prob.dtype, np.floating) or not np.all(np.isfinite(prob)):
        raise ValueError("prob must be a finite float map in [0, 1]")

    infected = prob >= threshold  # paper: pixel infected when Ŷ ≥ 0.5
    max_prob = float(prob.max())
    if lung_mask is None:
        # Severity = infected pixels / all pixels.
        severity = np.count_nonzero(infected) / infected.size
        basis: Literal["image", "lung"] = "image"
    else:
        lung = np.asarray(lung_mask)
        if lung.shape != prob.shape:
            raise ValueError(f"lung_mask shape {lung.shape} differs from prob shape {prob.shape}")
        lung = lung.astype(bool)
        lung_pixels = np.count_nonzero(lung)
        if lung_pixels == 0:
            raise ValueError("lung_mask is empty: severity of the lung field is undefined")
        # Severity = infected lung pixels / lung pixels.
        severity = np.count_nonzero(infected & lung) / lung_pixels
        basis = "lung"
    return Detection(
        covid=max_prob >= threshold,
        max_prob=max_prob,
        severity=float(severity),
        severity_basis=basis,
    )
