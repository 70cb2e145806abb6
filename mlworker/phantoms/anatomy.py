"""The normal thorax of a phantom: body, lung fields, mediastinum, heart, diaphragm, ribs, vessels.

The image is built as an attenuation-like field (bright = dense): soft tissue everywhere inside
the body, air taken away inside the lung fields, bone and vessels added. Exposure and noise are
applied later (cases.py), after any opacity, so that the brightness curve acts on everything alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mlworker.phantoms._raster import F32, blur, smooth_noise, smoothstep


@dataclass(frozen=True)
class Anatomy:
    """Shape parameters of one patient (all images of a patient share them)."""

    apex_y: float  # top of the lung fields
    cp_y: float  # costophrenic angles, the lowest point of the lungs
    dome_rise: float  # how far the diaphragm domes rise above the costophrenic angles
    right_dome_lift: float  # the right hemidiaphragm (image left) sits higher
    lung_width: float  # lateral reach of the lung fields
    apex_u: float  # distance of the lung apices from the midline
    body_width: float
    mediastinum_width: float
    heart_x: float
    heart_y: float
    heart_rx: float
    heart_ry: float
    rib_spacing: float
    rib_offset: float
    breast: float  # soft-tissue shadow over the lower zones (0 for none)
    gastric_bubble: float
    soft_tissue: float
    lung_air: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Anatomy:
        def u(lo: float, hi: float) -> float:
            # Python floats keep the float32 arrays float32 (a numpy float64 would promote them).
            return float(rng.uniform(lo, hi))

        return cls(
            apex_y=u(-0.84, -0.74),
            cp_y=u(0.50, 0.62),
            dome_rise=u(0.13, 0.20),
            right_dome_lift=u(0.02, 0.07),
            lung_width=u(0.74, 0.84),
            apex_u=u(0.25, 0.31),
            body_width=u(0.95, 1.10),
            mediastinum_width=u(0.085, 0.115),
            heart_x=u(0.06, 0.10),
            heart_y=u(0.12, 0.19),
            heart_rx=u(0.27, 0.31),
            heart_ry=u(0.25, 0.30),
            rib_spacing=u(0.105, 0.125),
            rib_offset=u(0.0, 1.0),
            breast=u(0.04, 0.10) if rng.random() < 0.4 else 0.0,
            gastric_bubble=u(0.06, 0.18) if rng.random() < 0.7 else 0.0,
            soft_tissue=u(0.76, 0.86),
            lung_air=u(0.52, 0.64),
        )

    def with_heart_scale(self, scale: float) -> Anatomy:
        """The same patient with a larger heart; it grows mostly towards the patient's left."""
        grow = self.heart_rx * (scale - 1.0)
        return replace(
            self,
            heart_rx=self.heart_rx * scale,
            heart_x=self.heart_x + 0.5 * grow,
            heart_ry=self.heart_ry * (1.0 + 0.5 * (scale - 1.0)),
        )


@dataclass(frozen=True)
class LungGeometry:
    """Where the lung fields are, and where each pixel sits inside them."""

    mask: np.ndarray  # bool, the lung fields
    side: np.ndarray  # -1 image left (patient right), +1 image right (patient left)
    height: np.ndarray  # 0 at the apex, 1 at the costophrenic angle
    lateral: np.ndarray  # 0 at the medial border, 1 at the lateral border


def diaphragm_y(u: np.ndarray, side: np.ndarray, a: Anatomy) -> np.ndarray:
    """Height of the diaphragm at distance u from the midline on each side."""
    dome_u = 0.3
    right = F32(a.cp_y - a.dome_rise - a.right_dome_lift)
    left = F32(a.cp_y - a.dome_rise)
    dome_y = np.where(side < 0, right, left)
    k = (F32(a.cp_y) - dome_y) / F32((a.lung_width - dome_u) ** 2)
    return dome_y + k * (u - F32(dome_u)) ** 2


def _mediastinum(x: np.ndarray, y: np.ndarray, a: Anatomy) -> np.ndarray:
    widen = a.mediastinum_width + 0.05 * smoothstep((y + 0.2) / 0.5)
    aortic_knob = 0.07 * np.exp(-(((y + 0.3) / 0.08) ** 2))
    return (x > -widen) & (x < widen + aortic_knob)


def heart_radius(x: np.ndarray, y: np.ndarray, a: Anatomy) -> np.ndarray:
    """Squared elliptic radius of the heart shadow (< 1 inside)."""
    # The heart sits on the diaphragm: below its widest level its borders run straight down.
    y = np.minimum(y, a.heart_y + 0.3 * a.heart_ry)
    dx = (x - a.heart_x) / a.heart_rx
    dy = (y - a.heart_y) / a.heart_ry
    # Its long axis runs from the great vessels down to the apex on the patient's left.
    return dx * dx + dy * dy - 0.5 * dx * dy


def lung_geometry(x: np.ndarray, y: np.ndarray, a: Anatomy) -> LungGeometry:
    side = np.where(x < 0, -1, 1).astype(np.int8)
    u = np.abs(x)
    height = (y - a.apex_y) / (a.cp_y - a.apex_y)
    t = np.clip(height, 0.0, 1.0)
    # Round apex, widening quickly, nearly vertical lateral walls in the lower half.
    grow = np.sqrt(np.sin(np.pi / 2 * np.clip(t / 0.8, 0.0, 1.0)))
    apex = np.sqrt(1.0 - (1.0 - np.clip(t / 0.2, 0.0, 1.0)) ** 2)
    lateral_u = a.apex_u + (a.lung_width - a.apex_u) * grow
    medial_u = a.apex_u - (a.apex_u - 0.02) * apex
    outer = (height >= 0) & (u > medial_u) & (u < lateral_u) & (y < diaphragm_y(u, side, a))
    mask = outer & ~_mediastinum(x, y, a) & (heart_radius(x, y, a) >= 1.0)
    lateral = np.clip((u - medial_u) / np.maximum(lateral_u - medial_u, 1e-3), 0.0, 1.0)
    return LungGeometry(mask=mask, side=side, height=t.astype(F32), lateral=lateral.astype(F32))


@dataclass(frozen=True)
class Thorax:
    attenuation: np.ndarray  # float32, bright = dense
    lungs: LungGeometry
    lung_soft: np.ndarray  # the lung fields with the soft edge the image shows


def render_thorax(x: np.ndarray, y: np.ndarray, a: Anatomy, rng: np.random.Generator) -> Thorax:
    """Attenuation of a normal thorax on the (already posed) coordinate grid."""
    size = x.shape[0]
    px = size / 2.0  # pixels per normalised unit
    lungs = lung_geometry(x, y, a)
    side, u = lungs.side, np.abs(x)
    lung_soft = blur(lungs.mask.astype(F32), 0.014 * px)

    # Body: soft tissue thicker centrally, shoulders sloping down to the neck.
    half_width = 0.85 + (a.body_width - 0.85) * smoothstep((y + 1.0) / 0.45)
    inside = np.clip(1.0 - (u / half_width) ** 2, 0.0, 1.0)
    body = smoothstep(inside / 0.05)
    soft = a.soft_tissue * body * (0.62 + 0.38 * np.sqrt(inside))
    soft += 0.03 * smooth_noise(rng, size, 5) * body

    # Below the diaphragm: liver and abdomen, plus the gastric air bubble under the left dome.
    below = smoothstep((y - diaphragm_y(u, side, a)) / 0.04)
    below *= smoothstep((a.lung_width + 0.12 - u) / 0.15)
    soft += 0.10 * below * body
    if a.gastric_bubble:
        dome = float(diaphragm_y(np.array(0.42), np.array(1), a))
        bubble = ((x - 0.42) / 0.12) ** 2 + ((y - dome - 0.085) / 0.055) ** 2
        soft -= a.gastric_bubble * smoothstep((1.0 - bubble) / 0.4) * body

    # Breast shadows thicken the lower lateral zones in some patients.
    if a.breast:
        breast = np.exp(-(((u - 0.55) / 0.26) ** 2) - (((y - a.cp_y + 0.1) / 0.2) ** 2))
        soft += a.breast * breast * body

    # Air in the lungs: most where the lung is thickest, less at the edges and over the domes.
    depth = np.sqrt(np.clip(np.sin(np.pi * lungs.lateral), 0.0, 1.0)) * (
        1.0 - 0.35 * lungs.height**2
    )
    air = a.lung_air * lung_soft * (0.5 + 0.5 * depth)
    air *= 1.0 + 0.06 * smooth_noise(rng, size, 40) + 0.05 * smooth_noise(rng, size, 14)
    att = soft - air

    # Mediastinum, heart and spine are denser than the chest wall.
    heart = smoothstep((1.0 - heart_radius(x, y, a)) / 0.3)
    att += 0.08 * heart * (1.0 - lung_soft)
    spine = np.exp(-(((x / 0.075) ** 2) ** 2))
    vertebrae = np.cos(2 * np.pi * (y / 0.095 + a.rib_offset))
    att += (0.06 + 0.015 * vertebrae) * spine * body
    trachea = np.exp(-(((x / 0.03) ** 2) ** 2)) * smoothstep((-0.15 - y) / 0.1)
    att -= 0.09 * trachea

    att += _ribs(x, y, u, a, rng, size) * body * (0.4 + 0.6 * lung_soft)
    att += _vessels(x, y, lungs, a, rng) * lung_soft
    # The detector and scatter soften every edge a little.
    att = blur(att.astype(F32), 0.007 * px)
    return Thorax(attenuation=att, lungs=lungs, lung_soft=lung_soft)


def _band(phase: np.ndarray, width: float, edge: float) -> np.ndarray:
    q = phase - np.floor(phase)
    core = smoothstep(q / edge) * smoothstep((width - q) / edge)
    # Cortical bone makes the rim of each rib a little brighter than its middle.
    mid = (q - 0.5 * width) / (0.5 * width)
    return core * (0.8 + 0.25 * mid * mid)


def _ribs(x, y, u, a: Anatomy, rng: np.random.Generator, size: int) -> np.ndarray:
    reach = smoothstep((a.lung_width + 0.08 - u) / 0.08) * smoothstep((u - 0.07) / 0.03)
    wobble = 0.3 * smooth_noise(rng, size, 4)
    # Posterior ribs leave the spine nearly flat and bend down laterally.
    post_v = y - (-0.3 * u + 0.75 * u * u)
    phase = (post_v - a.apex_y + 0.04) / a.rib_spacing + wobble
    post = _band(phase, 0.55, 0.1) * (phase > 0) * (phase < 10.55)
    # Anterior ribs run down towards the sternum and are fainter.
    ant_v = y - 0.45 * (a.lung_width - u)
    phase = (ant_v - a.apex_y + 0.3) / (a.rib_spacing * 1.2) + a.rib_offset + wobble
    ant = _band(phase, 0.35, 0.1) * (phase > 0) * (phase < 6.35) * smoothstep((u - 0.12) / 0.1)
    # Clavicles: an S-shaped band from the sternal notch towards the shoulders.
    clav_y = a.apex_y - 0.0 - 0.18 * (u - 0.1) + 0.05 * np.sin(np.pi * u / 0.7)
    clavicle = np.exp(-((((y - clav_y) / 0.035) ** 2) ** 2))
    clavicle *= smoothstep((0.75 - u) / 0.1) * smoothstep((u - 0.05) / 0.03)
    return reach * (0.075 * post + 0.035 * ant) + 0.12 * clavicle


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if len(rows) == 0:
        return None
    n = mask.shape[0]
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, n)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, n)),
    )


def _vessels(x, y, lungs: LungGeometry, a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Branching vascular markings fanning out from each hilum, fading to the periphery."""
    out = np.zeros_like(x)
    margin = 2 + x.shape[0] // 64
    for s in (-1, 1):
        freq = rng.integers(6, 26, size=10).tolist()
        phase = rng.uniform(0, 2 * np.pi, size=10).tolist()
        bend = rng.normal(0, 9.0, size=10).tolist()
        box = _bbox(lungs.mask & (lungs.side == s), margin)
        if box is None:
            continue
        hx, hy = s * (a.mediastinum_width + 0.12), -0.03
        dx, dy = (x[box] - F32(hx)) * F32(s), y[box] - F32(hy)
        r = np.sqrt(dx * dx + dy * dy)
        theta = np.arctan2(dy, dx)
        streak = np.zeros_like(r)
        for f, p, b in zip(freq, phase, bend, strict=True):
            streak += np.cos(f * theta + p + b * r)
        lines = np.clip(streak * F32(0.45) - F32(0.7), 0.0, None)
        hilum = np.exp(-((r / F32(0.08)) ** 2))
        out[box] += F32(0.07) * lines * np.exp(-r / F32(0.4)) + F32(0.07) * hilum
    return out
