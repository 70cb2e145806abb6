"""Small raster helpers for the phantoms: coordinate grids, smooth noise, soft ramps, polygons.

Everything works in normalised image coordinates (x right, y down, both in [-1, 1]) so that
a phantom keeps its layout at any pixel size. Arrays are float32: the generator is
memory-bound and float32 halves the traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

F32 = np.float32


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: (x, y), each (size, size) float32."""
    axis = ((np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0).astype(F32)
    return np.meshgrid(axis, axis)


@dataclass(frozen=True)
class Pose:
    """How the patient stands in the image: shifted, scaled and turned a little."""

    shift_x: float = 0.0
    shift_y: float = 0.0
    scale: float = 1.0
    turn: float = 0.0  # radians

    def grid(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Anatomy coordinates of every pixel centre."""
        x, y = grid(size)
        xs = (x - F32(self.shift_x)) / F32(self.scale)
        ys = (y - F32(self.shift_y)) / F32(self.scale)
        c, s = F32(np.cos(self.turn)), F32(np.sin(self.turn))
        return c * xs + s * ys, -s * xs + c * ys

    def pixel_box(self, cx: float, cy: float, radius: float, size: int) -> tuple[slice, slice]:
        """Rows and columns that hold every pixel within `radius` of an anatomy point."""
        c, s = np.cos(self.turn), np.sin(self.turn)
        ix = self.scale * (c * cx - s * cy) + self.shift_x
        iy = self.scale * (s * cx + c * cy) + self.shift_y
        r = radius * self.scale * size / 2.0 + 2.0
        col, row = (ix + 1.0) * size / 2.0, (iy + 1.0) * size / 2.0

        def span(centre: float) -> slice:
            return slice(
                int(np.clip(np.floor(centre - r), 0, size)),
                int(np.clip(np.ceil(centre + r), 0, size)),
            )

        return span(row), span(col)


def smoothstep(t: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, C1-smooth in between."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bspline_taps(size: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights (each (4, size)) of the cubic B-spline over a `cells` lattice."""
    pos = (np.arange(size) + 0.5) / size * cells - 0.5
    base = np.floor(pos).astype(np.intp)
    t = pos - base
    weights = (
        np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3])
        / 6.0
    )
    index = np.clip(base[None, :] + np.arange(-1, 3)[:, None], 0, cells - 1)
    return index, weights.astype(F32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, roughly unit-variance noise with about `cells` features across the image.

    Drawn on a coarse lattice and spread by a separable cubic B-spline, so the same draw gives
    the same pattern at every output size. Plain gathers, no BLAS: the result never depends
    on how many threads a matrix product would have used.
    """
    lattice = rng.standard_normal((cells, cells)).astype(F32)
    index, weights = _bspline_taps(size, cells)
    # Columns first, on the small lattice; then whole rows, which are cheap to gather.
    cols = sum(weights[m][None, :] * lattice[:, index[m]] for m in range(4))
    field = sum(weights[m][:, None] * cols[index[m], :] for m in range(4))
    return field / max(float(field.std()), 1e-6)


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0.3:
        return image
    return ndimage.gaussian_filter(image, sigma_px, mode="nearest", truncate=3.0)


def fill_polygon(xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray:
    """Pixels whose centres lie inside the polygon (even-odd rule); vertices in pixel units."""
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    x1, y1 = np.roll(xs, -1), np.roll(ys, -1)
    rows = np.arange(size, dtype=np.float64)[:, None] + 0.5
    crosses = (ys[None, :] <= rows) != (y1[None, :] <= rows)
    dy = np.where(y1 != ys, y1 - ys, 1.0)
    x_at = xs[None, :] + (rows - ys[None, :]) / dy[None, :] * (x1 - xs)[None, :]
    # The crossing toggles every pixel whose centre lies at or right of it.
    first = np.clip(np.ceil(x_at - 0.5), 0, size).astype(np.intp)
    row_idx = np.broadcast_to(np.arange(size)[:, None], first.shape)
    toggles = np.zeros((size, size + 1), dtype=np.int32)
    np.add.at(toggles, (row_idx[crosses], first[crosses]), 1)
    return (np.cumsum(toggles, axis=1)[:, :size] % 2).astype(bool)


def outline(mask: np.ndarray) -> np.ndarray:
    """The inner one-pixel boundary of a mask."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)
