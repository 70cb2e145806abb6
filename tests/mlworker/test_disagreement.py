"""Disagreement figures of a case's candidates, against hand-computed tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlworker.disagreement import (
    agree,
    audit_sampled,
    case_disagreement,
    disagreement_area,
    mean_entropy,
    mean_pairwise_dice,
    medoid,
)

A = np.array([[1, 1, 0, 0]], dtype=bool)
B = np.array([[1, 0, 0, 0]], dtype=bool)
EMPTY = np.zeros((1, 4), dtype=bool)


def h(p: float) -> float:
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_three_candidates_by_hand():
    # Dice(A,B) = 2·1/(2+1) = 2/3; Dice(A,∅) = Dice(B,∅) = 0 → mean 2/9.
    # Pixels 0 and 1 split the candidates, 2 and 3 are empty in all: area 1/2.
    # Mean of the masks per pixel: 2/3, 1/3, 0, 0 → entropy (h(2/3) + h(1/3)) / 4.
    figures = case_disagreement([A, B, EMPTY])
    assert figures.mean_pairwise_dice == pytest.approx(2 / 9)
    assert figures.min_pairwise_dice == 0.0
    assert figures.disagreement_area == pytest.approx(0.5)
    assert figures.mean_entropy == pytest.approx(2 * h(2 / 3) / 4)
    assert figures.n_candidates == 3


def test_two_empty_masks_agree_perfectly_and_one_candidate_has_nothing_to_disagree_about():
    assert mean_pairwise_dice([EMPTY, EMPTY]) == 1.0
    assert disagreement_area([EMPTY, EMPTY]) == 0.0
    single = case_disagreement([A])
    assert (single.mean_pairwise_dice, single.min_pairwise_dice) == (1.0, 1.0)
    assert single.disagreement_area == 0.0 and single.mean_entropy == 0.0


def test_entropy_uses_the_networks_probability_maps_8_bit_or_float():
    # Two networks: 8-bit maps 255·(1, .5, 0, 0) and floats (0, .5, 0, 0): mean (.5, .5, 0, 0).
    eight_bit = np.array([[255, 128, 0, 0]], dtype=np.uint8)
    floats = np.array([[0.0, 0.5, 0.0, 0.0]])
    expected = (h(0.5) + h((128 / 255 + 0.5) / 2)) / 4
    assert mean_entropy([eight_bit, floats]) == pytest.approx(expected)
    figures = case_disagreement([A, B], [eight_bit, floats])
    assert figures.mean_entropy == pytest.approx(expected)
    assert figures.mean_pairwise_dice == pytest.approx(2 / 3)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        case_disagreement([])
    with pytest.raises(ValueError, match="shape"):
        case_disagreement([A, np.zeros((2, 2), dtype=bool)])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mean_entropy([np.array([[1.5, 0.0]])])


def test_the_agreement_rule_takes_the_candidate_closest_to_the_others():
    wide = np.array([[1, 1, 1, 0]], dtype=bool)
    assert medoid([B, A, wide]) == 1  # A: Dice 2/3 and 4/5 to the others
    assert medoid([A]) == 0
    assert agree(0.95, 0.95) and not agree(0.949, 0.95) and not agree(math.nan, 0.5)


def test_the_audit_sample_is_a_fixed_draw_of_about_the_share_asked():
    picks = [audit_sampled(seed=3, case_id=i, share=0.05) for i in range(4000)]
    again = [audit_sampled(seed=3, case_id=i, share=0.05) for i in range(4000)]
    assert picks == again
    assert 0.035 < sum(picks) / 4000 < 0.065
    assert picks != [audit_sampled(seed=4, case_id=i, share=0.05) for i in range(4000)]
    assert not any(audit_sampled(seed=1, case_id=i, share=0.0) for i in range(100))
    assert all(audit_sampled(seed=1, case_id=i, share=1.0) for i in range(100))
    with pytest.raises(ValueError):
        audit_sampled(seed=1, case_id=1, share=1.5)
