"""Start weights: a stage's networks can start from saved networks, and the demo's
candidates, started from networks trained on phantoms of another seed, are worth choosing."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mlworker.demo_weights import demo_start_weights
from mlworker.nets import build_segmenter
from mlworker.train import build_for_training, load_start_weights

pytestmark = pytest.mark.keras


@pytest.fixture
def saved_unet(tmp_path):
    model = build_segmenter("unet", "tiny", input_shape=(64, 64, 3))
    path = tmp_path / "unet-tiny-64.keras"
    model.save(path)
    return model, path


def test_training_starts_from_the_saved_network(saved_unet):
    saved, path = saved_unet
    model = build_for_training(
        {"arch": "unet", "encoder": "tiny", "input_shape": (64, 64, 3), "start_weights": path}
    )
    for mine, theirs in zip(model.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert model.optimizer is not None  # compiled, ready to fine-tune
    fresh = build_for_training({"arch": "unet", "encoder": "tiny", "input_shape": (64, 64, 3)})
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(fresh.get_weights(), saved.get_weights(), strict=True)
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"arch": "dla", "encoder": "tiny", "input_shape": (64, 64, 3)},
            "hold a unet_tiny network",
        ),
        ({"arch": "unet", "encoder": "tiny", "input_shape": (96, 96, 3)}, r"take \(64, 64, 3\)"),
    ],
)
def test_start_weights_of_another_network_are_refused(saved_unet, config, message):
    _, path = saved_unet
    with pytest.raises(ValueError, match=message):
        load_start_weights(path, config)


def test_missing_or_foreign_start_weights_say_so(tmp_path):
    config = {"arch": "unet", "encoder": "tiny", "input_shape": (64, 64, 3)}
    with pytest.raises(ValueError, match="not found"):
        load_start_weights(tmp_path / "nothing.keras", config)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a Keras model file"):
        load_start_weights(junk, config)


def test_start_weights_never_come_from_the_demo_cohort(tmp_path):
    with pytest.raises(ValueError, match="another seed"):
        demo_start_weights(tmp_path, seed=2021, avoid_seed=2021)
    assert not list(tmp_path.glob("*.keras"))


@pytest.mark.slow
def test_demo_candidates_are_worth_choosing(tmp_path):
    """The demo cohort's Stage I (2-fold) and Stage II candidates of the U-Net, trained as the
    demo presets train them from the demo's start weights, reach pixel F1 ≥ 0.6 against the
    hidden truth (from random weights they are near 0: bench/demo_quality.py). About two
    CPU minutes, most of it making the start weights."""
    from bench.demo_quality import parse_args, run

    keras.utils.clear_session()
    results = run(parse_args(["--quick", "--weights-dir", str(tmp_path)]))
    assert set(results) == {"I unet", "II unet/0"}
    assert min(results.values()) >= 0.6, results
    # A second run makes nothing anew: the start weights are kept.
    stamp = (tmp_path / "unet-tiny-64.keras").stat().st_mtime_ns
    demo_start_weights(tmp_path, avoid_seed=2021, archs=["unet"])
    assert (tmp_path / "unet-tiny-64.keras").stat().st_mtime_ns == stamp
