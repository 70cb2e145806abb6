"""The hybrid loss against the paper's formulas, on cases small enough to do by hand."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from mlworker.losses import HybridLoss, lovasz_jaccard

pytestmark = pytest.mark.keras


def as_batch(rows: list[list[float]]) -> np.ndarray:
    """Rows of pixel values -> (batch, 1, W, 1) float32, the shape a segmenter emits."""
    arr = np.asarray(rows, dtype="float32")
    return arr.reshape(arr.shape[0], 1, arr.shape[1], 1)


def paper_focal(y: float, p: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    """FL = -α_t (1 - p_t)^γ log(p_t), α for positives and 1 - α for negatives."""
    p_t = p if y == 1 else 1.0 - p
    alpha_t = alpha if y == 1 else 1.0 - alpha
    return -alpha_t * (1.0 - p_t) ** gamma * math.log(max(p_t, 1e-7))


def paper_dice(ys: list[float], ps: list[float]) -> float:
    """Dice loss = 1 - 2 Σ y p / (Σ y + Σ p)."""
    return 1.0 - 2.0 * sum(y * p for y, p in zip(ys, ps, strict=True)) / (sum(ys) + sum(ps))


def test_single_image_matches_hand_computed_value():
    # Two pixels: a positive predicted 0.8, a negative predicted 0.3.
    #   FL(pos) = 0.25 * 0.2^2 * -ln 0.8 = 0.0022314
    #   FL(neg) = 0.75 * 0.3^2 * -ln 0.7 = 0.0240756   -> mean 0.0131535
    #   Dice    = 1 - 2*0.8 / (1 + 1.1)  = 0.2380952
    y, p = as_batch([[1, 0]]), as_batch([[0.8, 0.3]])
    focal = (paper_focal(1, 0.8) + paper_focal(0, 0.3)) / 2
    dice = paper_dice([1, 0], [0.8, 0.3])
    assert focal == pytest.approx(0.0131535, abs=1e-6)
    assert dice == pytest.approx(0.2380952, abs=1e-6)
    assert float(HybridLoss()(y, p)) == pytest.approx(focal + dice, abs=1e-6)


def test_focal_term_weights_positives_by_alpha_and_negatives_by_one_minus_alpha():
    # The same miss (p_t = 0.4) on a positive and on a negative pixel: only α_t differs,
    # so the negative costs three times as much (0.75 / 0.25).
    assert paper_focal(0, 0.6) == pytest.approx(3 * paper_focal(1, 0.4))
    loss = HybridLoss()
    for ys, ps in (([1, 0], [0.4, 0.0]), ([0, 1], [0.6, 1.0])):
        focal = (paper_focal(ys[0], ps[0]) + paper_focal(ys[1], ps[1])) / 2
        expected = focal + paper_dice(ys, ps)
        assert float(loss(as_batch([ys]), as_batch([ps]))) == pytest.approx(expected, abs=1e-6)


def test_batch_dice_sums_over_the_whole_batch_and_per_image_averages():
    # Image A has infection, image B is a control (empty mask) with one false positive.
    ys = [[1, 1, 0, 0], [0, 0, 0, 0]]
    ps = [[0.9, 0.6, 0.2, 0.1], [0.3, 0.0, 0.0, 0.0]]
    focal = np.mean(
        [
            paper_focal(y, p)
            for yr, pr in zip(ys, ps, strict=True)
            for y, p in zip(yr, pr, strict=True)
        ]
    )
    # Batch Dice: Σyp = 1.5, Σy = 2, Σp = 2.1 -> 1 - 3/4.1 = 0.2682927
    batch_dice = paper_dice(ys[0] + ys[1], ps[0] + ps[1])
    assert batch_dice == pytest.approx(0.2682927, abs=1e-6)
    # Per image: A = 1 - 3/3.8 = 0.2105263; B has Σy = Σyp = 0 -> 1 whatever it predicts.
    per_image_dice = (paper_dice(ys[0], ps[0]) + 1.0) / 2
    y, p = as_batch(ys), as_batch(ps)
    assert float(HybridLoss()(y, p)) == pytest.approx(focal + batch_dice, abs=1e-6)
    assert float(HybridLoss(per_image=True)(y, p)) == pytest.approx(
        focal + per_image_dice, abs=1e-6
    )


def test_a_perfect_prediction_costs_nothing_and_an_inverted_one_costs_most():
    y = as_batch([[1, 1, 0, 0]])
    perfect = float(HybridLoss()(y, y))
    inverted = float(HybridLoss()(y, 1.0 - y))
    assert perfect == pytest.approx(0.0, abs=1e-6)
    # Dice 1, focal = α_t * 1 * -ln(1e-7) per pixel: Keras clips probabilities to
    # [1e-7, 1 - 1e-7] (and 1 - 1e-7 rounds in float32, hence the loose tolerance).
    expected_inverted = 1.0 + (0.25 + 0.25 + 0.75 + 0.75) / 4 * -math.log(1e-7)
    assert inverted == pytest.approx(expected_inverted, rel=2e-2)


def test_empty_mask_and_empty_prediction_is_a_constant_dice_of_one():
    # Where the paper's ε in the numerator gives 0, Keras' Dice gives 1; the gradient
    # with respect to the prediction is zero either way, so training is unaffected.
    y = as_batch([[0, 0, 0, 0]])
    assert float(HybridLoss()(y, y)) == pytest.approx(1.0, abs=1e-6)


def test_half_precision_predictions_give_a_float32_loss():
    y, p = as_batch([[1, 0]]), as_batch([[0.8, 0.3]])
    value = HybridLoss()(y, p.astype("float16"))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(value) == pytest.approx(0.2512487, abs=1e-3)


def test_rejects_a_prediction_without_image_axes():
    with pytest.raises(ValueError, match=r"\(batch, H, W, 1\)"):
        HybridLoss()(np.zeros((2, 4), "float32"), np.zeros((2, 4), "float32"))


def test_a_saved_model_reloads_with_the_same_loss(tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=HybridLoss(per_image=True, gamma=3.0))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    y = (rng.uniform(size=(2, 8, 8, 1)) > 0.5).astype("float32")
    before = model.evaluate(x, y, verbose=0)
    model.optimizer.build(model.trainable_variables)  # saved with its (empty) state

    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")

    assert isinstance(loaded.loss, HybridLoss)
    assert loaded.loss.per_image and loaded.loss.gamma == 3.0
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(before, rel=1e-5)


def jaccard_loss(truth: np.ndarray, chosen: np.ndarray) -> float:
    """The set function: the Jaccard loss of getting the pixels in `chosen` wrong,
    1 - |truth minus chosen| / |truth or chosen| (1 - IoU of the prediction that errs there)."""
    union = np.logical_or(truth, chosen).sum()
    return 0.0 if union == 0 else 1.0 - np.logical_and(truth, ~chosen).sum() / union


def lovasz_by_level_sets(truth: np.ndarray, probs: np.ndarray) -> float:
    """The Lovász extension as a Choquet integral: the errors' level sets, each weighted by
    the drop to the next level, f(e) = Σ_i (e_(i) - e_(i+1)) Δ({pixels at or above e_(i)})."""
    errors = np.abs(truth.astype(float) - probs).ravel()
    order = np.argsort(-errors, kind="stable")
    levels = np.append(errors[order], 0.0)
    total = 0.0
    for i in range(len(order)):
        chosen = np.zeros(errors.size, bool)
        chosen[order[: i + 1]] = True
        total += (levels[i] - levels[i + 1]) * jaccard_loss(truth.ravel(), chosen)
    return total


def test_lovasz_term_of_a_hard_prediction_is_one_minus_its_iou():
    # Truth 1 1 1 0 0, prediction 1 1 0 1 0: TP 2, FN 1, FP 1 -> IoU 2/4.
    y, p = as_batch([[1, 1, 1, 0, 0]]), as_batch([[1, 1, 0, 1, 0]])
    assert float(lovasz_jaccard(y, p)) == pytest.approx(0.5, abs=1e-6)
    assert float(lovasz_jaccard(y, y)) == pytest.approx(0.0, abs=1e-6)


def test_lovasz_term_is_the_jaccard_loss_extended_over_soft_predictions():
    rng = np.random.default_rng(3)
    truth = rng.uniform(size=(3, 4, 5, 1)) > 0.6
    probs = rng.uniform(size=(3, 4, 5, 1)).astype("float32")
    y = truth.astype("float32")
    # Batch: one set over every pixel of every image; per image: the mean of each image's.
    assert float(lovasz_jaccard(y, probs)) == pytest.approx(
        lovasz_by_level_sets(truth, probs), abs=1e-5
    )
    per_image = keras.ops.convert_to_numpy(lovasz_jaccard(y, probs, per_image=True))
    expected = [lovasz_by_level_sets(truth[i], probs[i]) for i in range(3)]
    np.testing.assert_allclose(per_image, expected, atol=1e-5)
    # An image without infection scores its largest error (any predicted pixel: loss 1).
    empty = np.zeros((1, 4, 5, 1), "float32")
    assert float(lovasz_jaccard(empty, probs[:1])) == pytest.approx(float(probs[0].max()), abs=1e-6)


def test_lovasz_term_is_added_with_its_weight_and_survives_saving():
    y = as_batch([[1, 1, 0, 0], [0, 1, 0, 0]])
    p = as_batch([[0.9, 0.4, 0.2, 0.6], [0.1, 0.7, 0.3, 0.0]])
    plain = float(HybridLoss()(y, p))
    assert float(HybridLoss(lovasz=0.5)(y, p)) == pytest.approx(
        plain + 0.5 * float(lovasz_jaccard(y, p)), abs=1e-6
    )
    per_image = HybridLoss(per_image=True, lovasz=1.0)
    expected = float(HybridLoss(per_image=True)(y, p)) + float(
        keras.ops.mean(lovasz_jaccard(y, p, per_image=True))
    )
    assert float(per_image(y, p)) == pytest.approx(expected, abs=1e-6)
    assert HybridLoss.from_config(HybridLoss(lovasz=0.5).get_config()).lovasz == 0.5
    for bad in (-0.1, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="Lovász weight"):
            HybridLoss(lovasz=bad)


def test_lovasz_term_pulls_positives_up_and_negatives_down():
    # A one-layer network trained on the term alone: its gradient, taken through the sort
    # on whatever backend runs the tests, must lead to the truth.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 2)).astype("float32")
    y = (x[..., :1] > 0.3).astype("float32")
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=lovasz_jaccard)
    before = float(model.evaluate(x, y, verbose=0))
    model.fit(x, y, epochs=80, batch_size=8, verbose=0)
    after = float(model.evaluate(x, y, verbose=0))
    hard = keras.ops.convert_to_numpy(model.predict(x, verbose=0)) >= 0.5
    iou = np.logical_and(hard, y > 0).sum() / np.logical_or(hard, y > 0).sum()
    assert after < before / 2 and iou > 0.85
