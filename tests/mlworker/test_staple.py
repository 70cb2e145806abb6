"""STAPLE consensus: the majority where raters are alike, the better rater trusted more."""

from __future__ import annotations

import numpy as np
import pytest

from mlworker.staple import staple


def disc(cx: float, cy: float, r: float, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def test_three_raters_around_one_lesion_agree_on_its_core():
    masks = [disc(32, 32, 11), disc(32, 32, 13), disc(33, 32, 12)]
    result = staple(masks)
    # Raters this alike are trusted alike: the consensus is the pixels two of three mark.
    votes = np.sum(masks, axis=0)
    assert np.array_equal(result.mask, votes >= 2) and result.mask.sum() > 400
    assert result.probability.min() >= 0 and result.probability.max() <= 1
    assert len(result.sensitivity) == len(result.specificity) == 3
    # The smallest disc misses pixels the others mark: lowest sensitivity, perfect specificity.
    assert result.sensitivity[0] == min(result.sensitivity)
    assert result.specificity[0] == pytest.approx(1.0, abs=1e-6)


def test_a_rater_who_marks_noise_is_trusted_less_than_the_others():
    rng = np.random.default_rng(0)
    good = [disc(30, 30, 10), disc(31, 30, 10), disc(30, 31, 10)]
    noisy = disc(30, 30, 10) | (rng.random((64, 64)) < 0.2)
    result = staple([*good, noisy])
    assert result.specificity[3] < min(result.specificity[:3]) - 0.1
    assert not result.mask[(noisy & ~np.any(good, axis=0))].any()


def test_unanimous_masks_and_bad_input():
    empty = np.zeros((8, 8), bool)
    result = staple([empty, empty])
    assert not result.mask.any() and result.sensitivity == (1.0, 1.0)
    same = disc(4, 4, 2, size=8)
    assert np.array_equal(staple([same, same, same]).mask, same)
    with pytest.raises(ValueError, match="two or more"):
        staple([same])
    with pytest.raises(ValueError, match="one shape"):
        staple([same, np.zeros((8, 9), bool)])
