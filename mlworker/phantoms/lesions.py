"""Opacities added to the thorax: COVID-19 ground glass, and the findings that mimic it in controls.

Ground-glass opacity (GGO) is one smooth field F: a sum of soft anisotropic blobs placed mostly
in the lower, peripheral lung zones of both lungs, roughened by mid-frequency noise and confined
to the lung fields. The infection mask is F > THRESHOLD, and the opacity added to the image is
a contrast field times a ramp of (F - THRESHOLD) that is zero below the threshold. So the mask
is exact by construction: the image changes where, and only where, the mask is set.

A reader outlines ground glass where the haze becomes perceptible, not where it fades to
nothing: inside the mask the ramp starts at a visible floor (_VISIBLE of the lesion's contrast)
and rises smoothly to full contrast. Without the floor, a small blob whose field barely crosses
the threshold is labelled infected while adding almost nothing to the image.

The control findings are denser, sharper and placed differently (lobar consolidation with a
fissure edge and air bronchograms, round nodules, basal effusion with a meniscus); they never
produce a mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mlworker.phantoms._raster import F32, Pose, grid, smooth_noise, smoothstep
from mlworker.phantoms.anatomy import Anatomy, LungGeometry, lung_geometry

THRESHOLD = np.float32(0.5)
_RAMP = np.float32(
    0.55
)  # the soft edge: F - THRESHOLD over which the opacity reaches full contrast
# Share of the contrast at the mask's edge: where the haze becomes perceptible to a reader.
_VISIBLE = np.float32(0.35)
_SAMPLING_GRID = 48  # lesion centres are drawn on this coarse grid, whatever the image size


@dataclass(frozen=True)
class Blob:
    cx: float
    cy: float
    sx: float  # spread along the blob's own axes (normalised units)
    sy: float
    angle: float
    peak: float
    contrast: float


class _Sampler:
    """Draws lesion centres inside the lung fields, evaluated on a coarse grid once per case."""

    def __init__(self, a: Anatomy):
        self.x, self.y = grid(_SAMPLING_GRID)
        self.lungs = lung_geometry(self.x, self.y, a)

    def centre(self, rng: np.random.Generator, weight_fn, side: int | None) -> tuple[float, float]:
        w = weight_fn(self.lungs) * self.lungs.mask
        if side is not None:
            w = w * (self.lungs.side == side)
        w = w.ravel().astype(np.float64)
        pick = int(rng.choice(w.size, p=w / w.sum()))
        jx, jy = rng.uniform(-0.5, 0.5, size=2) * (2.0 / _SAMPLING_GRID)
        return float(self.x.flat[pick] + jx), float(self.y.flat[pick] + jy)


def _uniform_weight(lungs: LungGeometry) -> np.ndarray:
    return np.ones_like(lungs.height)


def _covid_weight(lungs: LungGeometry) -> np.ndarray:
    # Lower-zone and peripheral predominance, as in the radiology of COVID-19 pneumonia.
    return (0.03 + lungs.height**3) * (0.05 + lungs.lateral**2)


def draw_ggo(rng: np.random.Generator, a: Anatomy) -> tuple[list[Blob], dict]:
    """Lesion layout of one COVID-19 image: severity, sides, blobs."""
    severity = rng.choice(["mild", "moderate", "severe"], p=[0.25, 0.45, 0.3])
    n_main = {"mild": (1, 4), "moderate": (3, 7), "severe": (6, 12)}[severity]
    n_main = int(rng.integers(*n_main))
    spread = {"mild": (0.07, 0.12), "moderate": (0.1, 0.18), "severe": (0.14, 0.25)}[severity]
    bilateral = bool(rng.random() < 0.8) and n_main > 1
    first_side = int(rng.choice([-1, 1]))
    blobs: list[Blob] = []
    sampler = _Sampler(a)
    # Ground glass a reader reports is at least about as dense as the posterior rib shadows it
    # overlaps (0.075, anatomy._ribs); fainter haze goes unreported and unlabelled.
    base_contrast = rng.uniform(0.08, 0.14)
    sizes = rng.uniform(*spread, size=n_main)
    n_small = int(rng.integers(0, 4))
    for i in range(n_main + n_small):
        side = first_side if not bilateral else (first_side if i % 2 == 0 else -first_side)
        if i >= n_main:  # small satellite lesions: what a hurried reader misses
            side = int(rng.choice([-1, 1]))
        cx, cy = sampler.centre(rng, _covid_weight, side)
        s = float(sizes[i]) if i < n_main else float(rng.uniform(0.022, 0.035))
        # Peripheral lesions stretch along the pleura (vertically).
        elong = float(rng.uniform(1.0, 1.9))
        blobs.append(
            Blob(
                cx=cx,
                cy=cy,
                sx=s / np.sqrt(elong),
                sy=s * np.sqrt(elong),
                angle=float(rng.normal(0.0, 0.35)),
                peak=float(rng.uniform(0.85, 1.5)) if i < n_main else float(rng.uniform(0.9, 1.2)),
                contrast=float(base_contrast * rng.uniform(0.75, 1.35)),
            )
        )
    info = {
        "severity": str(severity),
        "n_lesions": n_main + n_small,
        "n_small_lesions": n_small,
        "bilateral": bilateral,
        "contrast": round(float(base_contrast), 4),
    }
    return blobs, info


def _blob_sums(
    x: np.ndarray, y: np.ndarray, pose: Pose, blobs: list[Blob]
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the blobs by peak, and by peak times contrast; each blob is evaluated only
    where it exceeds about 1e-3 of its peak."""
    raw, weighted = np.zeros_like(x), np.zeros_like(x)
    for b in blobs:
        rows, cols = pose.pixel_box(b.cx, b.cy, 3.75 * max(b.sx, b.sy), x.shape[0])
        bx, by = x[rows, cols], y[rows, cols]
        c, s = F32(np.cos(b.angle)), F32(np.sin(b.angle))
        dx, dy = bx - F32(b.cx), by - F32(b.cy)
        u = (c * dx + s * dy) / F32(b.sx)
        v = (-s * dx + c * dy) / F32(b.sy)
        g = np.exp(F32(-0.5) * (u * u + v * v))
        raw[rows, cols] += F32(b.peak) * g
        weighted[rows, cols] += F32(b.peak * b.contrast) * g
    return raw, weighted


@dataclass(frozen=True)
class Opacity:
    field: np.ndarray  # F, the smooth field the mask is thresholded from
    added: np.ndarray  # what is added to the attenuation (0 where F <= THRESHOLD)
    mask: np.ndarray  # F > THRESHOLD


def render_ggo(
    x: np.ndarray,
    y: np.ndarray,
    pose: Pose,
    blobs: list[Blob],
    lungs: LungGeometry,
    lung_soft: np.ndarray,
    rng: np.random.Generator,
) -> Opacity:
    size = x.shape[0]
    raw, weighted = _blob_sums(x, y, pose, blobs)
    # Irregular, lobulated margins and patchy interiors rather than clean Gaussians.
    rough = 1.0 + 0.3 * smooth_noise(rng, size, 14) + 0.12 * smooth_noise(rng, size, 36)
    field = (raw * rough * lung_soft * lungs.mask).astype(F32)
    mask = field > THRESHOLD
    contrast = weighted / np.maximum(raw, F32(1e-6))
    # Fine reticular texture (crazy paving) over the haze; kept positive so the mask stays exact.
    contrast = contrast * np.clip(1.0 + 0.3 * smooth_noise(rng, size, 60), 0.4, None)
    ramp = _VISIBLE + (1 - _VISIBLE) * smoothstep((field - THRESHOLD) / _RAMP)
    added = np.where(mask, contrast * ramp, 0.0).astype(F32)
    return Opacity(field=field, added=added, mask=mask)


CONTROL_FINDINGS = ("consolidation", "nodule", "effusion", "cardiomegaly")


def render_control_finding(
    finding: str,
    x: np.ndarray,
    y: np.ndarray,
    pose: Pose,
    a: Anatomy,
    lungs: LungGeometry,
    lung_soft: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict]:
    """Attenuation added by a non-COVID finding (cardiomegaly is drawn in the anatomy instead)."""
    if finding == "consolidation":
        return _consolidation(x, y, pose, a, lung_soft, rng)
    if finding == "nodule":
        return _nodules(x, y, a, rng)
    if finding == "effusion":
        return _effusion(lungs, lung_soft, rng)
    raise ValueError(f"no opacity to draw for finding {finding!r}")


def _consolidation(x, y, pose: Pose, a: Anatomy, lung_soft: np.ndarray, rng):
    size = x.shape[0]
    side = int(rng.choice([-1, 1]))
    # Lobar pneumonia: any zone, one lung, a dense homogeneous region.
    cx, cy = _Sampler(a).centre(rng, _uniform_weight, side)
    s = float(rng.uniform(0.11, 0.19))
    blobs = [Blob(cx, cy, s * rng.uniform(0.8, 1.3), s * rng.uniform(0.8, 1.3), 0.0, 1.0, 1.0)]
    # A second lobe of the same region makes the outline less regular.
    blobs.append(
        replace(blobs[0], cx=cx + rng.normal(0, s / 2), cy=cy + rng.normal(0, s / 2), peak=0.7)
    )
    raw = _blob_sums(x, y, pose, blobs)[0] * (1.0 + 0.3 * smooth_noise(rng, size, 12))
    region = smoothstep((raw - 0.3) / 0.45) * lung_soft
    # Only the right lung (image left) has the horizontal fissure.
    fissure = side < 0 and bool(rng.random() < 0.7)
    if fissure:
        # A fissure cuts the region with one straight, sharp border; the centre stays inside.
        offset = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.8) * s)
        edge = (y - (cy + offset)) / 0.012 * (1.0 if offset < 0 else -1.0)
        region = region * smoothstep(edge)
    # Air bronchograms: dark branching tubes inside the dense region.
    bronchi = np.exp(-((smooth_noise(rng, size, 8) / 0.08) ** 2)) * smoothstep((raw - 0.75) / 0.3)
    # Consolidation fills the air spaces: the region approaches soft-tissue density, most of
    # the lung's air (0.26-0.64, anatomy.render_thorax) replaced. Ground glass fills them only
    # partly (at most about 0.25), which is what tells the two apart on a radiograph.
    amplitude = float(rng.uniform(0.32, 0.45))
    added = amplitude * region * (1.0 - 0.3 * bronchi)
    return added.astype(F32), {"side": side, "fissure": fissure, "amplitude": round(amplitude, 4)}


def _nodules(x, y, a: Anatomy, rng):
    n = int(rng.integers(1, 4))
    added = np.zeros_like(x)
    sampler = _Sampler(a)
    for _ in range(n):
        cx, cy = sampler.centre(rng, _uniform_weight, None)
        r0 = float(rng.uniform(0.02, 0.05))
        r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / r0
        # A solid nodule: dense to its well-defined margin.
        added += float(rng.uniform(0.2, 0.32)) * smoothstep((1.0 - r) / 0.25)
    return added.astype(F32), {"n_nodules": n}


def _effusion(lungs: LungGeometry, lung_soft: np.ndarray, rng):
    sides = [int(rng.choice([-1, 1]))] if rng.random() < 0.7 else [-1, 1]
    added = np.zeros(lungs.mask.shape, dtype=F32)
    for side in sides:
        level = float(rng.uniform(0.74, 0.9))
        # The meniscus: fluid climbs higher along the lateral chest wall.
        meniscus = level - 0.16 * lungs.lateral**2
        depth = (lungs.height - meniscus) / 0.06
        amplitude = float(rng.uniform(0.3, 0.42))
        added += amplitude * smoothstep(depth) * (lungs.side == side) * lung_soft
    return added, {"sides": sides}
