"""Click encoding, the simulated reader and NoC: numpy only, no Keras."""

from __future__ import annotations

import numpy as np
import pytest

from mlworker.interactive import (
    Click,
    click_maps,
    interactive_input,
    next_click,
    noc,
    simulate_session,
    zone_map,
    zones_of,
)
from mlworker.interactive.clicks import correct_region


def test_click_maps_draw_disks_of_the_radius_in_the_channel_of_the_label():
    pos, neg = click_maps([(10, 12, True), (30, 5, "negative")], (40, 40), radius=3)
    assert pos[10, 12] == 1 and neg[30, 5] == 1
    assert neg[10, 12] == 0 and pos[30, 5] == 0
    # 3 pixels away is inside, 4 is not; a disk, so the diagonal (3, 3) lies outside.
    assert pos[13, 12] == 1 and pos[10, 15] == 1
    assert pos[14, 12] == 0 and pos[13, 15] == 0
    rows, cols = np.nonzero(pos)
    assert np.all((rows - 10) ** 2 + (cols - 12) ** 2 <= 9)
    assert pos.sum() == 29  # lattice points of a radius-3 disk
    assert pos.dtype == np.float32 and pos.shape == (40, 40)


def test_no_clicks_give_empty_maps_and_a_disk_is_clipped_at_the_edge():
    pos, neg = click_maps([], (8, 8), radius=2)
    assert not pos.any() and not neg.any()
    pos, _ = click_maps([Click(0, 0, True)], (8, 8), radius=2)
    assert pos.sum() == 6  # the quarter disk inside the image


@pytest.mark.parametrize(
    ("click", "message"),
    [
        ((40, 3, True), "outside"),
        ((-1, 3, True), "outside"),
        ((3, 3, "maybe"), "label"),
        ((3, 3, 2), "label"),
        ((3, 3), "row, col, label"),
        ((3.5, 3, True), "whole pixels"),
    ],
)
def test_bad_clicks_are_refused_with_a_clear_error(click, message):
    with pytest.raises(ValueError, match=message):
        click_maps([click], (40, 40), radius=3)


def test_zone_map_covers_the_chosen_sixths_with_the_patients_right_on_the_image_left():
    shape = (30, 20)
    m = zone_map(["right_upper", "left_lower"], shape)
    assert m[:10, :10].all() and m[20:, 10:].all()
    assert m.sum() == 2 * 10 * 10
    truth = np.zeros(shape, bool)
    truth[22:28, 12:18] = True  # image bottom right: the patient's left lower zone
    assert zones_of(truth) == ("left_lower",)
    with pytest.raises(ValueError, match="unknown lung zone"):
        zone_map(["upper"], shape)


def test_interactive_input_stacks_image_mask_clicks_and_zones():
    image = np.full((16, 16), 255, np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[2:5, 2:5] = True
    x = interactive_input(image, mask, [(8, 8, 1), (1, 1, 0)], ["left_upper"], radius=1)
    assert x.shape == (16, 16, 5) and x.dtype == np.float32
    assert np.allclose(x[..., 0], 1.0)
    assert (x[..., 1] == mask).all()
    assert x[8, 8, 2] == 1 and x[1, 1, 3] == 1 and x[8, 8, 3] == 0
    assert x[0, 15, 4] == 1 and x[0, 0, 4] == 0
    no_zones = interactive_input(image, None, [], radius=1, with_zones=False)
    assert no_zones.shape == (16, 16, 4) and not no_zones[..., 1].any()
    with pytest.raises(ValueError, match="takes no lung zones"):
        interactive_input(image, None, [], ["left_upper"], radius=1, with_zones=False)
    with pytest.raises(ValueError, match="0/1"):
        interactive_input(image, mask * 255, [], radius=1)
    with pytest.raises(ValueError, match="differs"):
        interactive_input(image, mask[:8], [], radius=1)


def _square(shape, top, left, side):
    m = np.zeros(shape, bool)
    m[top : top + side, left : left + side] = True
    return m


def test_a_missed_region_gets_a_positive_click_at_its_centre():
    truth = _square((40, 40), 5, 5, 9) | _square((40, 40), 25, 25, 3)
    pred = np.zeros_like(truth)
    click = next_click(pred, truth)
    # The larger of the two missed squares, at its centre (farthest from its border).
    assert click == Click(9, 9, True)


def test_a_spurious_region_gets_a_negative_click_inside_it():
    truth = _square((40, 40), 5, 5, 5)
    spurious = _square((40, 40), 20, 10, 15)
    pred = truth | spurious
    click = next_click(pred, truth)
    assert not click.positive
    assert spurious[click.row, click.col]
    assert (click.row, click.col) == (27, 17)


def test_the_largest_error_region_wins_whatever_its_kind():
    truth = _square((40, 40), 0, 0, 12)
    pred = truth.copy()
    pred[:4, :4] = False  # 16 missed pixels
    pred |= _square((40, 40), 30, 30, 6)  # 36 spurious pixels: the largest
    assert next_click(pred, truth).positive is False
    pred[:12, :12] = False  # now 144 missed pixels
    assert next_click(pred, truth).positive is True


def test_no_click_when_the_mask_is_perfect():
    truth = _square((20, 20), 3, 3, 5)
    assert next_click(truth, truth) is None


def test_correct_region_fixes_only_the_clicked_region():
    truth = _square((20, 20), 2, 2, 4) | _square((20, 20), 12, 12, 4)
    pred = np.zeros_like(truth)
    fixed = correct_region(pred, truth, Click(3, 3, True))
    assert (fixed == _square((20, 20), 2, 2, 4)).all()


def test_noc_counts_clicks_until_the_target_and_caps_at_20():
    assert noc([0.0, 0.5, 0.86, 0.91], 0.85) == 2
    assert noc([0.0, 0.5, 0.86, 0.91], 0.90) == 3
    assert noc([0.95], 0.90) == 0  # a start already good enough needs no click
    assert noc([0.1] * 30, 0.85) == 20
    assert noc([0.1] * 25 + [0.99], 0.85) == 20  # reached only after the cap
    with pytest.raises(ValueError):
        noc([0.5], 1.5)


def test_a_session_with_an_ideal_model_fixes_one_region_per_click():
    truth = _square((30, 30), 2, 2, 6) | _square((30, 30), 15, 15, 8)
    pred_regions = []

    def ideal(image, mask, clicks, zones):
        pred_regions.append(len(clicks))
        return correct_region(mask, truth, clicks[-1])

    result = simulate_session(ideal, np.zeros((30, 30)), truth, None, max_clicks=10)
    assert result.dices[0] == 0.0
    assert result.dices[-1] == 1.0 and result.perfect
    assert len(result.clicks) == 2 and all(c.positive for c in result.clicks)
    assert result.clicks[0] == Click(18, 18, True)  # the larger square first
    assert result.noc(0.85) == 2 and result.dice_after(5) == 1.0
    stopped = simulate_session(ideal, np.zeros((30, 30)), truth, None, target_dice=0.5)
    assert len(stopped.clicks) == 1 and stopped.dices[-1] >= 0.5
