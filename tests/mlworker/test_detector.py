"""The final detector's ML (issue 5, item 5; Grad-CAM classifiers): balanced training,
pixel and case evaluation, classifiers, and one case analysed as the viewer shows it.

Evaluation is checked with an "oracle" network whose probability map is the image's own
brightness, so every pixel's and case's outcome is known in advance."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mlworker.augment import CaseBatches
from mlworker.detection.analyse import analyse_case, gradcam_overlay
from mlworker.detection.evaluate import evaluate_classifier, evaluate_detector, evaluation_record
from mlworker.detection.train import (
    CLASSIFIER_LR,
    _LabelBatches,
    balanced_indices,
    train_classifier,
    train_detector,
)
from mlworker.phantoms import generate_cohort

pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

SIZE = 32


def oracle(size: int = SIZE) -> keras.Model:
    """Ŷ = grey level / 255: bright pixels are infected."""
    inputs = keras.Input((size, size, 3))
    grey = keras.layers.Conv2D(1, 1, use_bias=False, name="grey")(inputs)
    model = keras.Model(inputs, keras.layers.Rescaling(1 / 255)(grey))
    model.get_layer("grey").set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32)])
    return model


@pytest.fixture(scope="module")
def cohort():
    cases = generate_cohort(seed=5, n_covid=4, n_control=8, size=SIZE, manual_fraction=1.0)
    images = np.stack([c.image for c in cases])
    masks = np.stack([c.true_mask for c in cases])
    covid = np.array([c.label == "covid" for c in cases])
    return images, masks, covid


def test_balancing_repeats_covid_cases_up_to_the_controls():
    covid = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0], bool)  # 2 COVID-19, 7 controls
    indices = balanced_indices(covid, seed=1)
    picked = np.bincount(indices, minlength=len(covid))
    assert picked[covid].sum() == 7 and (picked[~covid] == 1).all()
    assert set(picked[covid]) == {3, 4}, "no case repeated more than once more than another"


def test_a_control_with_a_mask_or_a_run_without_covid_cases_is_refused(cohort):
    images, masks, covid = cohort
    bad = masks.copy()
    control = int(np.flatnonzero(~covid)[0])
    bad[control, 3, 3] = True
    with pytest.raises(ValueError, match=f"case {control} is a control but its mask is not empty"):
        evaluate_detector(oracle(), images, bad, covid)
    with pytest.raises(ValueError, match="no COVID-19 case"):
        train_detector(
            config={"arch": "unet", "encoder": "tiny", "input_shape": (SIZE, SIZE, 3)},
            images=images[~covid], masks=masks[~covid], covid=covid[~covid],
            epochs=1, batch_size=4, lr=1e-3,
        )  # fmt: skip


def test_evaluation_counts_every_pixel_and_case_as_the_paper_does():
    masks = np.zeros((4, SIZE, SIZE), bool)
    masks[0, 4:12, 4:12] = True  # COVID-19, found exactly
    masks[1, 20:28, 20:28] = True  # COVID-19, half of it found
    covid = np.array([True, True, False, False])
    images = np.full((4, SIZE, SIZE), 20, np.uint8)
    images[0][masks[0]] = 250
    images[1, 20:24, 20:28] = 250
    images[2, 0:2, 0:5] = 200  # a control with 10 bright pixels: falsely COVID-19
    evaluation = evaluate_detector(oracle(), images, masks, covid, batch_size=2)

    n_pixels = 4 * SIZE * SIZE
    pixel, pixel_covid = evaluation.pixel_with_controls.counts, evaluation.pixel.counts
    case = evaluation.detection.counts
    assert (pixel.tp, pixel.fn, pixel.fp) == (64 + 32, 32, 10)
    assert pixel.n == n_pixels
    assert pixel_covid.n == 2 * SIZE * SIZE and pixel_covid.fp == 0
    assert (case.tp, case.fp, case.tn, case.fn) == (
        2,
        1,
        1,
        0,
    )
    np.testing.assert_allclose(
        evaluation.max_probs, [250 / 255, 250 / 255, 200 / 255, 20 / 255], atol=1e-5
    )
    assert evaluation.severities[2] == pytest.approx(10 / (SIZE * SIZE))
    assert (
        evaluation.histogram.positives.sum() == 128
        and evaluation.histogram.negatives.sum() == n_pixels - 128
    )
    # Dice per image: 1, 2·32/(64+32), 0 (10 false pixels), 1 (both empty).
    assert evaluation.pixel_with_controls.mean_dice == pytest.approx((1 + 64 / 96 + 0 + 1) / 4)
    assert evaluation.ms_per_sample > 0
    stored = evaluation_record(evaluation)
    assert stored["case"] == {"tp": 2, "fp": 1, "tn": 1, "fn": 0} and stored["truth"] == [
        1,
        1,
        0,
        0,
    ]
    assert len(stored["histogram"]["positives"]) == stored["histogram"]["bins"]
    assert stored["pixel"] == {"tp": 96, "fp": 10, "tn": n_pixels - 138, "fn": 32}
    assert stored["mean_dice"] == pytest.approx((1 + 64 / 96 + 0 + 1) / 4, abs=1e-6)
    assert stored["severities"][2] == pytest.approx(10 / (SIZE * SIZE), abs=1e-6)


def test_training_feeds_the_balanced_cases_and_reports_progress(cohort, tmp_path):
    images, masks, covid = cohort
    events = []
    result = train_detector(
        config={"arch": "unet", "encoder": "tiny", "input_shape": (SIZE, SIZE, 3)},
        images=images, masks=masks, covid=covid, epochs=1, batch_size=4, lr=1e-3,
        checkpoint_dir=tmp_path, progress=events.append,
    )  # fmt: skip
    # 4 COVID-19 cases repeated up to 8, plus 8 controls: 16 cases, 4 batches of 4.
    assert [e["batch"] for e in events if e["event"] == "batch"] == [1, 2, 3, 4]
    assert result.epochs_done == 1 and (tmp_path / "state.json").is_file()
    evaluation = evaluate_detector(result.model, images, masks, covid)
    assert evaluation.detection.counts.n == len(images)
    assert evaluation.pixel_with_controls.counts.n == images.size


def test_classifier_batches_carry_each_cases_label():
    covid = np.array([True, False, False, False, True, False])
    images = np.zeros((6, SIZE, SIZE), np.uint8)
    cases = CaseBatches(
        images, np.broadcast_to(covid[:, None, None], images.shape), batch_size=4,
        indices=balanced_indices(covid), shuffle=True, seed=3,
    )  # fmt: skip
    labels = np.concatenate([_LabelBatches(cases)[b][1] for b in range(len(cases))])
    assert labels.shape == (8, 2) and (labels.sum(axis=1) == 1).all()
    assert labels[:, 1].sum() == 4, "COVID-19 cases repeated up to the four controls"


def test_a_classifier_trains_and_is_evaluated_per_case(cohort):
    images, _masks, covid = cohort
    result = train_classifier(encoder="tiny", images=images, covid=covid, epochs=1, batch_size=4)
    assert result.model.output_shape == (None, 2) and len(result.history["loss"]) == 1
    assert not result.cancelled and CLASSIFIER_LR == 1e-5
    evaluation = evaluate_classifier(result.model, images, covid)
    case = evaluation["case"]
    assert case["tp"] + case["fn"] == covid.sum() and case["tn"] + case["fp"] == (~covid).sum()
    assert all(0 <= p <= 1 for p in evaluation["probs"])
    with pytest.raises(ValueError, match="both COVID-19 and control"):
        train_classifier(encoder="tiny", images=images[covid], covid=covid[covid], epochs=1)


def test_one_case_gets_its_map_verdict_severity_and_gradcam_at_full_size(cohort):
    from mlworker.nets import build_classifier

    xray = np.full((80, 64), 20, np.uint8)  # larger than the networks' input, not square
    xray[10:30, 10:30] = 250
    classifier = build_classifier("tiny", input_shape=(SIZE, SIZE, 3))
    analysis = analyse_case(oracle(), xray, classifier=classifier, encoder="tiny")
    assert analysis.prob.shape == xray.shape and analysis.infection_map.shape == (80, 64, 3)
    assert analysis.detection.covid and analysis.prob[20, 20] > 0.9 and analysis.prob[60, 50] < 0.1
    assert analysis.detection.severity == pytest.approx((analysis.prob >= 0.5).mean())
    assert (
        analysis.gradcam.shape == xray.shape
        and 0 <= analysis.gradcam.min() <= analysis.gradcam.max() <= 1
    )
    assert 0 <= analysis.classifier_prob <= 1 and set(analysis.ms) == {"detector", "classifier"}
    clear = analyse_case(oracle(), np.full((80, 64), 20, np.uint8))
    assert not clear.detection.covid and clear.gradcam is None
    overlay = gradcam_overlay(xray, analysis.gradcam)
    assert overlay.shape == (80, 64, 3) and overlay.dtype == np.uint8
    with pytest.raises(ValueError, match="must match"):
        gradcam_overlay(xray, analysis.gradcam[:10])
