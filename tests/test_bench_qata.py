"""The QaTa-COV19 benchmark's data and post-processing choices (bench/qata_benchmark.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bench.common import distinct_names, first_of_each
from bench.qata_benchmark import MIN_PATCHES, choose_postprocessing, drop_small_patches
from tests.mlworker.test_data import write_qata_folder


def test_byte_identical_repeats_under_other_names_are_dropped_first_name_kept(tmp_path):
    names = write_qata_folder(tmp_path, n=4, size=32)
    # A repeat of case 1 under another name (as the shared copy's upper/lower-case pairs)...
    shutil.copy(tmp_path / "Images" / names[1], tmp_path / "Images" / "copy.png")
    shutil.copy(
        tmp_path / "Ground-truths" / f"mask_{names[1]}",
        tmp_path / "Ground-truths" / "mask_copy.png",
    )
    # ...and an image repeated with another mask: not a duplicate, both kept.
    shutil.copy(tmp_path / "Images" / names[2], tmp_path / "Images" / "relabelled.png")
    shutil.copy(
        tmp_path / "Ground-truths" / f"mask_{names[3]}",
        tmp_path / "Ground-truths" / "mask_relabelled.png",
    )
    listed = [names[0], names[1], "copy.png", names[2], "relabelled.png", names[3]]
    assert distinct_names(tmp_path, listed) == [
        names[0],
        names[1],
        names[2],
        "relabelled.png",
        names[3],
    ]
    assert first_of_each([b"a", b"b", b"a", b"c", b"b"]) == [0, 1, 3]


def test_patches_under_the_rule_are_zeroed_bigger_ones_and_the_rest_untouched():
    prob = np.full((1, 40, 40), 0.2, np.float32)
    prob[0, 2:4, 2:4] = 0.9  # 4 px
    prob[0, 10:30, 10:30] = 0.8  # 400 px
    out = drop_small_patches(prob, 0.5, 16)
    assert out[0, 2:4, 2:4].max() == 0.0
    np.testing.assert_array_equal(out[0, 10:30, 10:30], np.float32(0.8))
    assert out[0, 35, 35] == pytest.approx(0.2)
    assert drop_small_patches(prob, 0.5, 0) is prob


def _cases(seed: int, n: int = 40, size: int = 32):
    """Masks with one square lesion, and maps with a one-pixel false positive that score the
    lesion's left half 0.45 (under 0.5: the best threshold is lower) and its right half 0.03
    (under the background: no threshold finds it)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    plain = np.full((n, size, size), 0.05, np.float32)
    for i in range(n):
        r, c = rng.integers(4, size - 14, 2)
        masks[i, r : r + 10, c : c + 10] = True
        plain[i, r : r + 10, c : c + 5] = 0.45
        plain[i, r : r + 10, c + 5 : c + 10] = 0.03
        plain[i, 0, size - 1] = 0.95  # a one-pixel false positive
    return masks, plain


def test_post_processing_is_chosen_on_the_monitored_images_and_every_single_change_is_reported():
    masks, plain = _cases(0)
    # The mirror variant is better: it scores the whole lesion 0.7.
    mirror = np.where(masks, 0.7, plain).astype(np.float32)
    monitored = list(range(0, 40, 2))
    result = choose_postprocessing(masks, {"plain": plain, "mirror": mirror}, monitored)
    rows = {row["label"].split(" (")[0]: row for row in result["rows"]}
    as_trained = result["rows"][0]
    assert as_trained["threshold"] == 0.5 and as_trained["f1"] < 0.1  # the lesion is missed
    threshold_row = result["rows"][1]
    assert 0.05 < threshold_row["threshold"] <= 0.45 and threshold_row["f1"] > 0.6
    assert rows["mirror test-time augmentation"]["f1"] > 0.9
    chosen = result["rows"][-1]
    assert result["chosen"]["variant"] == "mirror"
    # The one-pixel speck goes with the smallest rule that removes it; the lesion stays.
    assert result["chosen"]["min_patch_px"] == min(k for k in MIN_PATCHES if 1 < k <= 100)
    assert chosen["f1"] == pytest.approx(1.0)
    assert set(result["rows"][-1]) >= {"f1", "mean_dice", "monitored_f1", "threshold"}


def test_ensemble_table_scores_every_combination_with_thresholds_chosen_on_the_monitored_only():
    from bench.qata_benchmark import pixel_scores
    from bench.qata_ensemble import ensemble_table

    masks, plain = _cases(1)
    sharp = np.where(masks, 0.9, 0.1).astype(np.float32)  # a near-perfect member
    monitored = list(range(0, 40, 2))
    table = ensemble_table(masks, {"weak": plain, "sharp": sharp}, monitored)
    assert list(table) == ["weak", "sharp", "weak+sharp"]
    mean = (plain + sharp) / 2
    assert table["weak+sharp"]["f1"] == pytest.approx(pixel_scores(masks, mean, 0.5)[0])
    assert table["sharp"]["f1"] == pytest.approx(1.0)
    # Averaged with the weak member, the lesion's right half falls under 0.5: below the best.
    assert table["weak+sharp"]["f1"] < table["sharp"]["f1"]
    # The threshold is chosen on the monitored images: it rescues the pair there.
    assert table["weak+sharp"]["threshold"] < 0.5
    assert table["weak+sharp"]["f1_at_threshold"] > table["weak+sharp"]["f1"]

    # Spoiling only images never monitored changes no threshold, only their scores.
    spoiled = sharp.copy()
    spoiled[1::2] = 0.0
    again = ensemble_table(masks, {"weak": plain, "sharp": spoiled}, monitored)
    for key in table:
        assert again[key]["threshold"] == table[key]["threshold"]
    assert table["sharp"]["f1_unmonitored"] == pytest.approx(1.0)
    assert again["sharp"]["f1_unmonitored"] == 0.0
    assert again["sharp"]["f1"] == pytest.approx(pixel_scores(masks, spoiled, 0.5)[0])

    # The whole ensemble's maps, when given (its network's output), are used as they are.
    network = np.where(masks, 0.8, 0.0).astype(np.float32)
    given = ensemble_table(masks, {"weak": plain, "sharp": sharp, "weak+sharp": network}, monitored)
    assert list(given) == ["weak", "sharp", "weak+sharp"]
    assert given["weak+sharp"]["f1"] == pytest.approx(1.0)
