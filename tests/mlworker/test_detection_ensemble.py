"""Several detectors as one network: the mean of their maps, saved and loaded like any model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mlworker.detection.ensemble import mean_ensemble
from mlworker.saved import load_model, save_model

pytestmark = pytest.mark.keras


def _brightness(name: str, size: int = 16, *, scale: float = 1.0) -> keras.Model:
    """A network whose map is the image's brightness times `scale` (a known answer)."""
    inputs = keras.Input((size, size, 3))
    grey = keras.layers.Rescaling(scale / (3 * 255.0))(inputs)
    out = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones")(grey)
    return keras.Model(inputs, out, name=name)


def test_the_ensemble_map_is_the_mean_of_the_members_maps_and_survives_saving(tmp_path):
    a, b = _brightness("a"), _brightness("b", scale=0.5)
    x = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    ensemble = mean_ensemble([a, b])
    got = np.asarray(ensemble.predict(x, verbose=0))
    assert np.allclose(got, 0.75 * x.mean(axis=-1, keepdims=True) / 255.0, atol=1e-5)
    save_model(ensemble, tmp_path / "ensemble.keras")
    again = load_model(tmp_path / "ensemble.keras")
    assert np.allclose(np.asarray(again.predict(x, verbose=0)), got, atol=1e-6)


def test_an_ensemble_is_refused_when_it_cannot_be_one():
    with pytest.raises(ValueError, match="at least 2"):
        mean_ensemble([_brightness("a")])
    with pytest.raises(ValueError, match="different inputs"):
        mean_ensemble([_brightness("a"), _brightness("b", size=32)])
    with pytest.raises(ValueError, match="share a name"):
        mean_ensemble([_brightness("a"), _brightness("a")])
