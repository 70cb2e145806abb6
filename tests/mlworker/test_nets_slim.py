"""The slim from-scratch encoder: its stages, its widths option, and every arch on top of it."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mlworker.nets import SLIM_WIDTHS, build_segmenter, count_params, feature_layer_name
from mlworker.networks import ARCHS
from tests.mlworker.test_nets import SMALL, _changed, _images, _masks, _train_save_reload

pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept:DeprecationWarning"),
]


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()


def _encoder_params(widths) -> tuple[int, int]:
    """(trainable, non-trainable) of two bias-free 3x3 conv-BN per stage, from 3 RGB channels."""
    trainable = non_trainable = 0
    for cin, width in zip((3, *widths), widths, strict=False):
        trainable += 9 * (cin * width + width * width) + 2 * 2 * width  # kernels, gamma/beta
        non_trainable += 2 * 2 * width  # moving mean/variance
    return trainable, non_trainable


@pytest.mark.parametrize("widths", [None, (8, 12, 16, 20, 24)])
def test_slim_encoder_has_two_convs_per_stage_and_a_skip_at_each_stride(widths):
    model = build_segmenter(
        "unet", "slim", input_shape=(64, 64, 3), decoder_widths=SMALL, encoder_widths=widths
    )
    expected = widths or SLIM_WIDTHS
    for i, width in enumerate(expected, start=1):
        side = 64 // 2**i
        assert model.get_layer(f"slim_block{i}a_conv").strides == (2, 2)
        assert model.get_layer(f"slim_block{i}b_conv").strides == (1, 1)
        assert tuple(model.get_layer(f"slim_block{i}b_relu").output.shape) == (
            None,
            side,
            side,
            width,
        )
    assert feature_layer_name("slim") == "slim_block5b_relu"
    # Freezing takes exactly the encoder's parameters out of training.
    frozen = build_segmenter(
        "unet",
        "slim",
        input_shape=(64, 64, 3),
        decoder_widths=SMALL,
        encoder_widths=widths,
        frozen=True,
    )
    (t_free, n_free), (t_frozen, n_frozen) = count_params(model), count_params(frozen)
    trainable, non_trainable = _encoder_params(expected)
    assert t_free - t_frozen == n_frozen - n_free == trainable
    encoder = [la for la in model.layers if la.name.startswith("slim_")]
    assert sum(int(np.prod(v.shape)) for la in encoder for v in la.non_trainable_weights) == (
        non_trainable
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_slim_network_trains_saves_and_reloads(arch, tmp_path):
    widths = (8, 8, 16, 16, 24)
    model = build_segmenter(
        arch, "slim", input_shape=(64, 64, 3), decoder_widths=SMALL, encoder_widths=widths
    )
    x, y = _images(64, batch=2), _masks(64, batch=2)
    out = keras.ops.convert_to_numpy(model(x))
    assert out.shape == (2, 64, 64, 1) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    before, reloaded = _train_save_reload(model, x, y, tmp_path, eager=arch != "unet")
    encoder = [model.get_layer(f"slim_block{i}{p}_conv") for i in range(1, 6) for p in "ab"]
    assert all(_changed(before, layer.kernel) for layer in encoder)
    assert _changed(before, model.get_layer("slim_block1a_bn").moving_mean)
    # The widths travel with the saved file: no argument is needed to reload it.
    assert [reloaded.get_layer(f"slim_block{i}b_conv").filters for i in range(1, 6)] == list(widths)


def test_slim_network_gives_input_resolution_for_odd_sizes():
    for size in [(32, 32), (33, 50), (97, 64)]:
        model = build_segmenter(
            "unetpp",
            "slim",
            input_shape=(*size, 3),
            decoder_widths=SMALL,
            encoder_widths=(4, 4, 8, 8, 8),
        )
        assert tuple(keras.ops.convert_to_numpy(model(_images(size))).shape) == (1, *size, 1)
