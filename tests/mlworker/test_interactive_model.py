"""The click-refinement network: building, training with simulated clicks, the predict path a
server uses, save and reload (run under TensorFlow and again under PyTorch)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mlworker.interactive.model import build_interactive, prompt_spec, refine_probabilities, refiner
from mlworker.interactive.session import simulate_session
from mlworker.interactive.training import train_interactive
from mlworker.saved import load_model, save_model

pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

SIZE = 32
WIDTHS = (8, 8, 8)


def blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark noisy radiographs with one bright square each; the square is the accepted mask."""
    rng = np.random.default_rng(seed)
    images = rng.normal(60, 10, (n, SIZE, SIZE))
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        r, c = rng.integers(4, SIZE - 14, 2)
        masks[i, r : r + 10, c : c + 10] = True
    images[masks] += 120
    return np.clip(images, 0, 255).astype(np.uint8), masks


def one_click_dice(model, images, masks) -> float:
    fn = refiner(model)
    return float(
        np.mean(
            [
                simulate_session(fn, image, truth, None, max_clicks=1).dices[-1]
                for image, truth in zip(images, masks, strict=True)
            ]
        )
    )


@pytest.fixture(scope="module")
def trained():
    images, masks = blobs(24)
    events = []
    keras.utils.set_random_seed(1)
    untrained = build_interactive(SIZE, widths=WIDTHS)
    test_images, test_masks = blobs(6, seed=9)
    before = one_click_dice(untrained, test_images, test_masks)
    # Half the cases come with a candidate mask (here the accepted mask shifted down by 3).
    candidates = [np.roll(m, 3, axis=0) if i % 2 else None for i, m in enumerate(masks)]
    result = train_interactive(
        images,
        masks,
        candidates,
        epochs=6,
        batch_size=4,
        lr=3e-3,
        widths=WIDTHS,
        progress=events.append,
    )
    yield result, events, before, (test_images, test_masks)
    keras.backend.clear_session()


def test_the_network_takes_four_channels_or_five_with_zones():
    assert build_interactive(SIZE, widths=WIDTHS).input_shape == (None, SIZE, SIZE, 5)
    plain = build_interactive(SIZE, widths=WIDTHS, zones=False)
    assert plain.input_shape == (None, SIZE, SIZE, 4)
    assert plain.output_shape == (None, SIZE, SIZE, 1)
    assert prompt_spec(plain)[1:] == (2.0, False)
    with pytest.raises(ValueError, match="multiple of 4"):
        build_interactive(30, widths=WIDTHS)


def test_training_with_simulated_clicks_improves_one_click_dice(trained):
    result, events, before, (images, masks) = trained
    after = one_click_dice(result.model, images, masks)
    assert result.epochs_done == 6 and not result.cancelled
    assert after >= 0.6 and after > before + 0.2, (before, after)
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    assert epochs[-1]["loss"] < epochs[0]["loss"] and "dice" in epochs[-1]
    assert len(result.history["loss"]) == 6


def test_refine_answers_at_the_image_resolution_and_refuses_outside_clicks(trained):
    model = trained[0].model
    big = np.kron(trained[3][0][0], np.ones((2, 2), np.uint8))  # 64x64
    prob = refine_probabilities(model, big, None, [(40, 40, "positive")], ["left_lower"])
    assert prob.shape == (64, 64) and prob.dtype == np.float32
    assert prob.min() >= 0 and prob.max() <= 1
    with pytest.raises(ValueError, match="outside"):
        refine_probabilities(model, big, None, [(64, 3, True)])


def test_save_and_reload_predict_identically(trained, tmp_path):
    model = trained[0].model
    image, truth = trained[3][0][1], trained[3][1][1]
    clicks = [(5, 5, False), (20, 20, True)]
    expected = refine_probabilities(model, image, truth, clicks, ["right_upper"])
    save_model(model, tmp_path / "clicks.keras")
    again = load_model(tmp_path / "clicks.keras")
    assert prompt_spec(again) == prompt_spec(model)
    got = refine_probabilities(again, image, truth, clicks, ["right_upper"])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_training_stops_when_cancelled_and_refuses_bad_masks():
    images, masks = blobs(4)
    result = train_interactive(
        images, masks, epochs=3, batch_size=2, widths=WIDTHS, should_cancel=lambda: True
    )
    assert result.cancelled and result.epochs_done == 0
    with pytest.raises(ValueError, match="0/1"):
        train_interactive(images, masks.astype(np.uint8) * 255, widths=WIDTHS)
    empty = masks.copy()
    empty[0] = False
    with pytest.raises(ValueError, match="some infection"):
        train_interactive(images, empty, widths=WIDTHS)
    with pytest.raises(ValueError, match="candidates"):
        train_interactive(images, masks, [None], widths=WIDTHS)
