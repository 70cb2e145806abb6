"""cxrio.outline: one outline style for every candidate, and the test of whether the style shows."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cxrio.outline import dice, normalise_outline, outline_features, roc_auc, source_auc
from mlworker.phantoms import generate_case
from mlworker.phantoms._raster import fill_polygon


def polygon_mask(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A few clicks around a centre: straight edges and sharp corners, like a polygon tool."""
    n = int(rng.integers(4, 8))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(12, 22) * rng.uniform(0.8, 1.2, n)
    cx, cy = rng.uniform(35, 60, 2)
    return fill_polygon(cx + radius * np.cos(angles), cy + radius * np.sin(angles), size)


def blob_mask(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A network-like mask of the same kind of lesion: a polygon's content rendered as a
    network renders it (blurred probability, smooth noise, thresholded), so a wavy blob."""
    probability = ndimage.gaussian_filter(polygon_mask(rng, size).astype(float), 2.5)
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), 3.0)
    return probability + 0.2 * noise / np.abs(noise).max() > 0.5


def phantom_masks(n: int = 4) -> list[np.ndarray]:
    masks = []
    seed = 0
    while len(masks) < n:
        case = generate_case(seed=seed, size=160, label="covid")
        seed += 1
        if case.manual_mask.any():
            masks += [np.asarray(case.manual_mask), np.asarray(case.true_mask)]
    return masks


def test_normalising_keeps_each_mask_within_dice_097_of_its_original():
    rng = np.random.default_rng(1)
    fixtures = phantom_masks() + [polygon_mask(rng) for _ in range(4)]
    fixtures += [blob_mask(rng) for _ in range(4)]
    scores = [dice(normalise_outline(m), m) for m in fixtures]
    assert min(scores) >= 0.9  # slivers and specks may lose more
    assert np.mean(scores) >= 0.97
    # It does change the outline: a polygon's corners are rounded.
    polygon = polygon_mask(rng)
    assert not np.array_equal(normalise_outline(polygon), polygon)


def test_normalising_is_deterministic_and_nearly_idempotent():
    rng = np.random.default_rng(2)
    for mask in (polygon_mask(rng), blob_mask(rng), phantom_masks(1)[0]):
        once = normalise_outline(mask)
        assert np.array_equal(once, normalise_outline(mask.copy()))
        assert dice(normalise_outline(once), once) >= 0.98


@pytest.mark.parametrize(
    "pixels",
    [
        [(40, 40)],  # one pixel: a tiny lesion
        [(10, 10), (10, 11), (11, 10), (11, 11)],  # 2 x 2
        [(5, c) for c in range(20, 60)],  # a one-pixel line
    ],
)
def test_a_cases_only_lesion_survives_however_small(pixels):
    mask = np.zeros((96, 96), dtype=bool)
    for r, c in pixels:
        mask[r, c] = True
    out = normalise_outline(mask)
    assert out.any()
    assert dice(out, mask) >= 0.9


def test_the_minimum_component_rule_drops_specks_beside_a_lesion_but_never_the_lesion():
    rng = np.random.default_rng(3)
    lesion = blob_mask(rng)
    speck = np.zeros_like(lesion)
    speck[2, 2] = True  # one pixel, far from the lesion
    out = normalise_outline(lesion | speck)
    assert not out[2, 2]
    assert dice(out, lesion) >= 0.95
    # Patches of a fair size are all kept, each on its own: none merge, none vanish.
    two = np.zeros((96, 96), dtype=bool)
    two[20:35, 20:35] = True
    two[20:35, 38:53] = True
    _, n = ndimage.label(normalise_outline(two))
    assert n == 2


def test_an_empty_mask_stays_empty_and_bad_input_is_refused():
    assert not normalise_outline(np.zeros((10, 12), dtype=bool)).any()
    with pytest.raises(ValueError, match="2-D"):
        normalise_outline(np.zeros((2, 3, 4)))


def test_roc_auc_of_known_rankings():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert np.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_the_classifier_tells_polygons_from_blobs_and_normalising_blurs_the_difference():
    rng = np.random.default_rng(4)
    polygons = [polygon_mask(rng) for _ in range(30)]
    blobs = [blob_mask(rng) for _ in range(30)]
    labels = [1] * 30 + [0] * 30
    raw = np.stack([outline_features(m) for m in polygons + blobs])
    normalised = np.stack([outline_features(normalise_outline(m)) for m in polygons + blobs])
    before = source_auc(raw, labels)
    after = source_auc(normalised, labels)
    assert before >= 0.9  # the outline alone gives the source away
    assert after < before - 0.1


def test_the_classifier_is_at_chance_on_one_source_split_at_random():
    rng = np.random.default_rng(5)
    masks = [blob_mask(rng) for _ in range(60)]
    labels = rng.permutation([1] * 30 + [0] * 30)
    auc = source_auc(np.stack([outline_features(m) for m in masks]), labels)
    assert 0.25 <= auc <= 0.75
    # Too few of a kind: no number.
    assert np.isnan(source_auc(np.zeros((6, 3)), [1, 1, 1, 0, 0, 0]))


def test_a_shallow_dent_is_filled_and_corners_rounded_whatever_the_source():
    # A network's shallow dent in an otherwise straight run is filled (the closing by the
    # patch's own size), where the old style (closing by 0.3 x the size) kept part of it.
    square = np.zeros((96, 96), dtype=bool)
    square[28:68, 28:68] = True
    dented = square.copy()
    dented[28:30, 43:53] = False  # 2 px deep, 10 px wide
    out = normalise_outline(dented)
    assert out[29, 43:53].all()  # at most a sub-pixel trace of it is left
    assert not normalise_outline(dented, fill=0.3, rounding=0.0)[29, 43:53].any()
    assert dice(out, square) >= 0.97
    # A polygon's corners come out rounded, its edges kept.
    assert not out[28, 28] and not out[67, 67]
    assert out[28, 36] and out[48, 28]
