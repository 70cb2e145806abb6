"""The imaging chain around the anatomy: positioning, exposure, noise, burned-in markers."""

from __future__ import annotations

import numpy as np

from mlworker.phantoms._raster import F32, Pose, grid

# Side markers as radiographers burn them in: 5 x 3 bitmaps of "R" and "L".
_GLYPHS = {
    "R": np.array([[1, 1, 1], [1, 0, 1], [1, 1, 0], [1, 0, 1], [1, 0, 1]], dtype=bool),
    "L": np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]], dtype=bool),
}


def draw_pose(rng: np.random.Generator) -> Pose:
    sx, sy = rng.uniform(-0.03, 0.03, 2)
    return Pose(
        shift_x=float(sx),
        shift_y=float(sy),
        scale=float(rng.uniform(1.0, 1.1)),
        turn=float(rng.normal(0.0, 0.025)),
    )


def expose(
    att: np.ndarray, rng: np.random.Generator, noise_rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """uint8 image of an attenuation field: window, contrast curve, heel effect, quantum noise,
    and sometimes a side marker in an upper corner.

    Everything but the marker is pixel-wise and monotonic in the attenuation, and the noise does
    not depend on the content: two versions of one image differ only where their attenuation
    does. The marker sits in a corner, away from the lungs.
    """
    size = att.shape[0]
    low, high = rng.uniform(-0.07, 0.06), rng.uniform(0.9, 1.1)
    gamma = rng.uniform(0.8, 1.35)
    heel_dir, heel = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.05)
    sigma = rng.uniform(0.006, 0.02)
    x, y = grid(size)
    heel_field = F32(heel) * (F32(np.cos(heel_dir)) * x + F32(np.sin(heel_dir)) * y)
    bright = np.clip((att + heel_field - F32(low)) / F32(high - low), 0.0, 1.0) ** F32(gamma)
    bright = bright + F32(sigma) * noise_rng.standard_normal((size, size), dtype=np.float32)
    image = np.round(np.clip(bright, 0.0, 1.0) * 255.0).astype(np.uint8)
    params = {"window_low": low, "window_high": high, "gamma": gamma, "heel": heel, "noise": sigma}
    marker = str(rng.choice(["", "R", "L"], p=[0.6, 0.25, 0.15]))
    if marker:
        cell = max(1, round(size / 110))
        glyph = np.kron(_GLYPHS[marker], np.ones((cell, cell), dtype=bool))
        top = round(rng.uniform(0.02, 0.06) * size)
        left = round(rng.uniform(0.03, 0.1) * size)
        if rng.random() < 0.5:
            left = size - left - glyph.shape[1]
        patch = image[top : top + glyph.shape[0], left : left + glyph.shape[1]]
        patch[glyph] = int(rng.integers(215, 256))
    params["marker"] = marker or None
    return image, params
