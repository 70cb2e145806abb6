"""Augmentation: one transform for image and mask, binary masks, paper's ranges, balancing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlworker.augment import (
    Affine,
    CaseBatches,
    apply_affine,
    augment_pair,
    balance_by_augmentation,
    random_affine,
)

pytestmark = pytest.mark.keras


def disk(size: int, centre: tuple[int, int], radius: int) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def test_the_mask_stays_binary_and_moves_with_the_image():
    mask = disk(64, (26, 38), 12)
    image = np.where(mask, 230, 25).astype(np.uint8)  # the image shows the mask
    moved = 0
    for seed in range(20):
        aug_image, aug_mask = augment_pair(image, mask, np.random.default_rng(seed))
        assert aug_mask.dtype == bool
        assert aug_image.dtype == np.float32 and aug_image.min() >= 25 and aug_image.max() <= 230
        # Bilinear and nearest only disagree on the rim of the disk.
        agreement = np.mean((aug_image > 127.5) == aug_mask)
        assert agreement > 0.98, f"seed {seed}: image and mask moved apart ({agreement:.3f})"
        moved += not np.array_equal(aug_mask, mask)
    assert moved == 20


def test_float_masks_keep_exactly_their_values():
    mask = disk(32, (16, 16), 8).astype(np.float32)
    _, aug_mask = augment_pair(np.zeros((32, 32), np.uint8), mask, np.random.default_rng(3))
    assert set(np.unique(aug_mask)) <= {0.0, 1.0}


def test_same_seed_gives_the_same_transform_and_another_seed_another():
    mask = disk(48, (20, 30), 9)
    image = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    a = augment_pair(image, mask, np.random.default_rng(7))
    b = augment_pair(image, mask, np.random.default_rng(7))
    c = augment_pair(image, mask, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_draws_stay_within_ten_percent_shift_and_ten_degrees():
    rng = np.random.default_rng(0)
    draws = [random_affine(rng, (200, 100)) for _ in range(500)]
    angles = np.array([d.angle for d in draws])
    rows = np.array([d.shift_rows for d in draws])
    cols = np.array([d.shift_cols for d in draws])
    assert np.abs(angles).max() <= 10 and np.abs(angles).max() > 9.5
    assert np.abs(rows).max() <= 20 and np.abs(rows).max() > 19
    assert np.abs(cols).max() <= 10 and np.abs(cols).max() > 9.5
    # Both directions are drawn.
    assert angles.min() < -9.5 and rows.min() < -19 and cols.min() < -9.5


def test_shift_moves_a_point_by_the_drawn_pixels():
    image = np.zeros((21, 21), np.float32)
    image[10, 10] = 1.0
    out = apply_affine(image, Affine(angle=0.0, shift_rows=4.0, shift_cols=-3.0), order=0)
    assert np.argwhere(out == 1.0).tolist() == [[14, 7]]


def test_rotation_turns_about_the_centre():
    image = np.zeros((21, 21), np.float32)
    image[10, 18] = 1.0  # 8 px right of the centre (10, 10)
    out = apply_affine(image, Affine(angle=90.0, shift_rows=0.0, shift_cols=0.0), order=0)
    # Positive angles turn clockwise on screen (rows grow downwards).
    assert np.argwhere(out == 1.0).tolist() == [[18, 10]]
    out = apply_affine(image, Affine(angle=10.0, shift_rows=0.0, shift_cols=0.0), order=1)
    r, c = np.unravel_index(np.argmax(out), out.shape)
    assert math.hypot(r - 10, c - 10) == pytest.approx(8, abs=1)
    assert r > 10  # moved down, off the horizontal line


def test_nearest_fill_leaves_no_empty_border():
    # A constant radiograph stays constant: the uncovered border copies the edge pixels.
    image = np.full((40, 40), 180, np.uint8)
    for seed in range(5):
        aug, _ = augment_pair(image, np.zeros((40, 40), bool), np.random.default_rng(seed))
        assert np.allclose(aug, 180)


def test_rgb_images_get_the_same_transform_on_every_channel():
    grey = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    aug, _ = augment_pair(rgb, np.zeros((32, 32), bool), np.random.default_rng(2))
    assert aug.shape == (32, 32, 3)
    assert np.array_equal(aug[..., 0], aug[..., 1]) and np.array_equal(aug[..., 0], aug[..., 2])


def test_mismatched_image_and_mask_are_refused():
    with pytest.raises(ValueError, match="differ in size"):
        augment_pair(np.zeros((32, 32)), np.zeros((16, 16), bool), np.random.default_rng(0))


def test_covid_cases_are_repeated_up_to_the_number_of_controls():
    covid, control = [0, 1, 2], list(range(3, 11))  # 3 COVID-19, 8 controls
    order = balance_by_augmentation(covid, control, seed=5)
    counts = np.bincount(order, minlength=11)
    assert counts[covid].sum() == len(control)
    assert set(counts[covid]) <= {2, 3}  # 8 = 3 originals + 3 repeats + 2 drawn
    assert (counts[control] == 1).all()
    assert np.array_equal(order, balance_by_augmentation(covid, control, seed=5))
    # Nothing to do when COVID-19 cases already match or outnumber the controls.
    assert sorted(balance_by_augmentation([0, 1, 2], [3], seed=0)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="both"):
        balance_by_augmentation([0, 1], [1, 2], seed=0)


def test_batches_are_rgb_in_0_255_with_binary_masks_and_cover_every_case_once():
    n = 10
    images = np.stack([np.full((16, 16), 20 * i, np.uint8) for i in range(n)])
    masks = np.zeros((n, 16, 16), bool)
    masks[:, 4:8, 4:8] = True
    batches = CaseBatches(images, masks, batch_size=4, shuffle=True, seed=3)
    assert len(batches) == 3
    seen = []
    for b in range(len(batches)):
        x, y = batches[b]
        assert x.dtype == np.float32 and x.shape[1:] == (16, 16, 3)
        assert y.dtype == np.float32 and y.shape[1:] == (16, 16, 1)
        assert set(np.unique(y)) == {0.0, 1.0}
        seen += (x[:, 0, 0, 0] / 20).astype(int).tolist()
    assert sorted(seen) == list(range(n))
    first_order = seen
    batches.on_epoch_end()  # next epoch, new order
    second_order = [int(v / 20) for b in range(3) for v in batches[b][0][:, 0, 0, 0]]
    assert sorted(second_order) == list(range(n)) and second_order != first_order


def test_a_lone_last_case_joins_the_previous_batch():
    images, masks = np.zeros((9, 8, 8), np.uint8), np.zeros((9, 8, 8), bool)
    batches = CaseBatches(images, masks, batch_size=4)
    assert len(batches) == 2 and [len(batches[b][0]) for b in range(2)] == [4, 5]
    assert [len(x) for x, _ in CaseBatches(images[:6], masks[:6], batch_size=4)] == [4, 2]
    assert [len(x) for x, _ in CaseBatches(images[:1], masks[:1], batch_size=4)] == [1]


def test_a_batch_is_the_same_whenever_it_is_fetched():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 16, 16), dtype=np.uint8)
    masks = rng.uniform(size=(6, 16, 16)) > 0.5
    batches = CaseBatches(images, masks, batch_size=2, augment=True, shuffle=True, seed=9)
    first = batches[2]
    batches[0], batches[1]
    again = batches[2]
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])


def test_repeated_cases_are_augmented_each_differently_even_without_augmentation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 24), dtype=np.uint8)
    mask = disk(24, (12, 12), 5)
    batches = CaseBatches(image[None], mask[None], batch_size=3, indices=[0, 0, 0], augment=False)
    x, y = batches[0]
    assert np.array_equal(x[0, ..., 0], image)  # the original is left alone
    assert not np.array_equal(x[1], x[0]) and not np.array_equal(x[2], x[0])
    assert not np.array_equal(x[1], x[2])
    assert set(np.unique(y)) == {0.0, 1.0}


def test_bad_batch_inputs_are_refused():
    images, masks = np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8), bool)
    with pytest.raises(ValueError, match="do not match"):
        CaseBatches(images, masks[:, :4], batch_size=2)
    with pytest.raises(ValueError, match="indices"):
        CaseBatches(images, masks, batch_size=2, indices=[0, 4])
    with pytest.raises(ValueError, match="batch_size"):
        CaseBatches(images, masks, batch_size=0)
    with pytest.raises(ValueError, match="no cases"):
        CaseBatches(images, masks, batch_size=2, indices=[])
