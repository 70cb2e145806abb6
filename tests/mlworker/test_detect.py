"""COVID-19 detection and severity (issue "mlworker engine", item 7)."""

from __future__ import annotations

import numpy as np
import pytest

from mlworker.detection.rule import Detection, detect


def test_a_single_pixel_at_the_threshold_makes_the_case_covid():
    prob = np.full((32, 32), 0.1, np.float32)
    prob[3, 4] = 0.5
    result = detect(prob)
    assert result == Detection(covid=True, max_prob=0.5, severity=1 / 1024, severity_basis="image")


def test_a_map_just_under_the_threshold_is_not_covid():
    prob = np.full((32, 32), 0.4999, np.float32)
    result = detect(prob)
    assert not result.covid
    assert result.severity == 0.0
    assert result.max_prob == pytest.approx(0.4999)


def test_the_threshold_is_configurable():
    prob = np.zeros((10, 10), np.float32)
    prob[:3] = 0.7
    assert detect(prob, threshold=0.5).covid
    strict = detect(prob, threshold=0.8)
    assert not strict.covid and strict.severity == 0.0
    assert detect(prob, threshold=0.6).severity == pytest.approx(0.3)


def test_severity_is_the_infected_share_of_the_lung_field_when_a_lung_mask_is_given():
    prob = np.zeros((20, 20), np.float32)
    lung = np.zeros((20, 20), bool)
    lung[:, :10] = True  # 200 lung pixels
    prob[0:5, 0:10] = 0.9  # 50 infected, all inside the lung
    prob[0, 15] = 0.95  # one infected pixel outside the lung still makes the case COVID-19
    result = detect(prob, lung_mask=lung.astype(np.uint8))
    assert result.severity_basis == "lung"
    assert result.severity == pytest.approx(50 / 200)
    assert result.covid and result.max_prob == pytest.approx(0.95)
    assert detect(prob).severity == pytest.approx(51 / 400)


def test_it_accepts_a_trailing_channel_axis():
    prob = np.zeros((8, 8, 1), np.float32)
    prob[2, 2, 0] = 0.8
    assert detect(prob).covid


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prob": np.zeros((4,), np.float32)}, "HxW"),
        ({"prob": np.full((4, 4), np.nan, np.float32)}, "finite"),
        ({"prob": np.zeros((4, 4), np.float32), "threshold": 0.0}, "threshold"),
        ({"prob": np.zeros((4, 4), np.float32), "lung_mask": np.ones((5, 5))}, "shape"),
        ({"prob": np.zeros((4, 4), np.float32), "lung_mask": np.zeros((4, 4))}, "empty"),
    ],
)
def test_it_rejects_bad_input_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        detect(**kwargs)
