"""The manual mask a hurried human draws over the true infection.

A reader outlining infection in a CXR viewer with a polygon tool does not trace pixel borders:
they click a handful of points around each patch they notice, often one outline around a
whole cluster, with some systematic bias (too generous or too tight) and some wobble. Small
faint patches are often missed. This module simulates that, so that the manual masks imported
with the phantoms are plausible but measurably worse than the hidden truth.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mlworker.phantoms._raster import fill_polygon, outline

_EIGHT = np.ones((3, 3), dtype=bool)


def _convex_hull(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Indices of the convex hull of a few points, counter-clockwise (Andrew's monotone chain)."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], ys[i]))

    def cross(o: int, a: int, b: int) -> float:
        return (xs[a] - xs[o]) * (ys[b] - ys[o]) - (ys[a] - ys[o]) * (xs[b] - xs[o])

    lower: list[int] = []
    upper: list[int] = []
    for i in order:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], i) <= 0:
            lower.pop()
        lower.append(i)
    for i in reversed(order):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], i) <= 0:
            upper.pop()
        upper.append(i)
    return np.array(lower[:-1] + upper[:-1], dtype=np.intp)


def _coarse_outline(
    region: np.ndarray, n_clicks: int, scale: float, wobble: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A polygon of a few clicks around a region: the farthest boundary pixel in each of
    `n_clicks` directions, their convex hull, then the reader's bias and wobble."""
    pixels = np.argwhere(region)
    edge = np.argwhere(outline(region)).astype(np.float64)
    cy, cx = pixels.mean(axis=0)
    ey, ex = edge[:, 0] - cy, edge[:, 1] - cx
    angle = np.arctan2(ey, ex)
    radius = np.hypot(ey, ex)
    offset = rng.uniform(0, 2 * np.pi / n_clicks)
    sector = (((angle - offset) % (2 * np.pi)) / (2 * np.pi) * n_clicks).astype(np.intp)
    sector = np.minimum(sector, n_clicks - 1)
    # The farthest edge pixel of each direction (lexsort: by sector, then by radius).
    order = np.lexsort((radius, sector))
    last = np.r_[sector[order][1:] != sector[order][:-1], True]
    picks = order[last]
    px, py = ex[picks] + 0.5 * np.sign(ex[picks]), ey[picks] + 0.5 * np.sign(ey[picks])
    if len(picks) >= 3:
        hull = _convex_hull(px, py)
        if len(hull) >= 3:
            px, py = px[hull], py[hull]
    if len(px) < 3:  # a tiny patch: a small diamond around it
        r = max(1.0, float(radius.max()) + 0.5)
        px, py = np.array([r, 0.0, -r, 0.0]), np.array([0.0, r, 0.0, -r])
    # Bias scales the outline about its centre; each click then lands a little off, by an
    # amount that grows with the patch (a hand's error, not a spike along one direction).
    reach = np.sqrt(len(pixels) / np.pi)
    jitter = rng.normal(0.0, wobble * reach, (2, len(px)))
    shift = rng.normal(0.0, 0.12 * reach, 2)
    return cx + shift[0] + px * scale + jitter[0], cy + shift[1] + py * scale + jitter[1]


def _groups(
    centres: np.ndarray, keep: list[int], areas: np.ndarray, reach: float, middle: float
) -> list[list[int]]:
    """Patches a reader outlines together: same lung and close to each other (union-find)."""
    parent = {k: k for k in keep}

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    for i, a in enumerate(keep):
        for b in keep[i + 1 :]:
            (ay, ax), (by, bx) = centres[a], centres[b]
            near = np.hypot(ax - bx, ay - by) < reach * np.sqrt((areas[a] + areas[b]) / np.pi)
            if near and (ax < middle) == (bx < middle):
                parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for k in keep:
        groups.setdefault(root(k), []).append(k)
    return list(groups.values())


def _union_box(boxes: list[tuple[slice, slice]], margin: int, size: int) -> tuple[slice, slice]:
    return tuple(
        slice(
            max(min(b[d].start for b in boxes) - margin, 0),
            min(max(b[d].stop for b in boxes) + margin, size),
        )
        for d in (0, 1)
    )


def draw_manual_mask(
    true_mask: np.ndarray, lung_mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """The hurried reader's version of `true_mask`, and how it was drawn."""
    size = true_mask.shape[0]
    manual = np.zeros_like(true_mask)
    labels, n = ndimage.label(true_mask, structure=_EIGHT)
    if n == 0:
        return manual, {"bias": "none", "scale": 1.0, "missed": 0, "outlines": 0}
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=n + 1).astype(np.float64)
    rows, cols = np.indices(labels.shape)
    centres = (
        np.stack(
            [
                np.bincount(flat, weights=rows.ravel(), minlength=n + 1),
                np.bincount(flat, weights=cols.ravel(), minlength=n + 1),
            ],
            axis=1,
        )
        / np.maximum(areas, 1)[:, None]
    )
    boxes = ndimage.find_objects(labels)
    # Systematic bias of this reader on this image.
    bias = str(rng.choice(["generous", "tight", "fair"], p=[0.35, 0.3, 0.35]))
    scale = {"generous": (1.12, 1.32), "tight": (0.66, 0.84), "fair": (0.88, 1.06)}[bias]
    scale = float(rng.uniform(*scale))
    small = 0.0015 * size * size
    keep = [
        k
        for k in range(1, n + 1)
        if areas[k] >= small or rng.random() > (0.85 if areas[k] < small / 3 else 0.55)
    ]
    if not keep:  # a reader who outlines anything outlines the largest patch
        keep = [int(np.argmax(areas[1:])) + 1]
    missed = n - len(keep)
    # Some readers lump neighbouring patches into one outline, some outline each.
    reach = float(rng.choice([0.0, 1.6, 2.4], p=[0.4, 0.35, 0.25]))
    groups = _groups(centres, keep, areas, reach, size / 2)
    n_clicks = int(rng.integers(4, 9))
    for members in groups:
        box = _union_box([boxes[k - 1] for k in members], 1, size)
        region = np.isin(labels[box], members)
        xs, ys = _coarse_outline(region, n_clicks, scale, 0.2, rng)
        manual |= fill_polygon(xs + box[1].start, ys + box[0].start, size)
    # Readers keep roughly to the lungs, but the polygon tool overshoots their borders.
    if rng.random() < 0.7:
        margin = max(1, round(0.02 * size))
        manual &= ndimage.binary_dilation(lung_mask, iterations=margin)
    info = {
        "bias": bias,
        "scale": round(scale, 4),
        "missed": missed,
        "outlines": len(groups),
    }
    return manual, info
