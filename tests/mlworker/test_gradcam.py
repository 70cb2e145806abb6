"""Grad-CAM (issue "mlworker engine", item 9) on tiny classifiers whose answer is known.

The classifiers are built here with hand-set weights: feature channel 0 is the mean
brightness of each 2x2 block, channel 1 its darkness (1 − mean), global average pooling,
and a 2-unit softmax whose COVID-19 logit is mean(ch0) − mean(ch1). Selvaraju's weights
are then α = (+1/64, −1/64), so the COVID-19 map is ReLU(2m − 1) per block: it lights
exactly the bright square and nothing else; the control class lights the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from scipy import ndimage

from mlworker.gradcam import gradcam

pytestmark = pytest.mark.keras

SIZE = 16
REPO_ROOT = Path(__file__).resolve().parents[2]


def _set_feature_weights(conv: keras.layers.Conv2D) -> None:
    kernel = np.zeros((2, 2, 1, 2), np.float32)
    kernel[..., 0, 0] = 0.25  # block mean
    kernel[..., 0, 1] = -0.25  # 1 − block mean, with the bias below
    conv.set_weights([kernel, np.array([0.0, 1.0], np.float32)])


def _features(name: str = "features") -> keras.layers.Conv2D:
    return keras.layers.Conv2D(2, 2, strides=2, activation="relu", name=name)


def _head_weights() -> list[np.ndarray]:
    return [np.array([[-1.0, 1.0], [1.0, -1.0]], np.float32), np.zeros(2, np.float32)]


def _flat_classifier(final: str = "dense_softmax", head: list | None = None) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 1))
    conv = _features()
    x = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    if final == "dense_softmax":
        dense = keras.layers.Dense(2, activation="softmax")
        outputs = dense(x)
    elif final == "activation_softmax":  # as mlworker.nets.build_classifier ends
        dense = keras.layers.Dense(2, name="logits")
        outputs = keras.layers.Activation("softmax", name="predictions")(dense(x))
    elif final == "softmax_layer":
        dense = keras.layers.Dense(2)
        outputs = keras.layers.Softmax()(dense(x))
    else:  # an output that is not a softmax: Grad-CAM uses the output itself
        dense = keras.layers.Dense(2, activation="sigmoid")
        outputs = dense(x)
    model = keras.Model(inputs, outputs)
    _set_feature_weights(conv)
    dense.set_weights(head or _head_weights())
    return model


def _nested_classifier() -> keras.Model:
    """Like build_classifier(encoder): the encoder is one layer of the classifier."""
    encoder_input = keras.Input((SIZE, SIZE, 1))
    conv = _features("block")
    encoder = keras.Model(encoder_input, conv(encoder_input), name="encoder")
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.GlobalAveragePooling2D()(encoder(inputs))
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(x))
    _set_feature_weights(conv)
    dense.set_weights(_head_weights())
    return model


def _images() -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    squares = [(slice(2, 6), slice(2, 6)), (slice(10, 14), slice(8, 12))]
    images = np.full((len(squares), SIZE, SIZE, 1), 0.2, np.float32)
    for image, square in zip(images, squares, strict=True):
        image[square] = 1.0
    return images, squares


def _expected(images: np.ndarray, class_index: int) -> np.ndarray:
    """The analytic map: ReLU(±(2m − 1)) per 2x2 block, bilinear to 16x16, max 1."""
    maps = []
    for image in images[..., 0]:
        block_mean = image.reshape(SIZE // 2, 2, SIZE // 2, 2).mean(axis=(1, 3))
        sign = 1.0 if class_index == 1 else -1.0
        cam = np.maximum(sign * (2 * block_mean - 1), 0)
        up = ndimage.zoom(cam, 2, order=1, mode="nearest", grid_mode=True)
        maps.append(up / up.max())
    return np.stack(maps)


FINALS = ["dense_softmax", "activation_softmax", "softmax_layer", "not_softmax"]


@pytest.mark.parametrize("final", FINALS)
def test_the_covid_map_lights_the_bright_square_and_nothing_else(final):
    images, squares = _images()
    heatmaps = gradcam(_flat_classifier(final), images, layer_name="features")
    assert heatmaps.shape == (2, SIZE, SIZE) and heatmaps.dtype == np.float32
    np.testing.assert_allclose(heatmaps, _expected(images, 1), atol=1e-5)
    for heatmap, square in zip(heatmaps, squares, strict=True):
        assert heatmap[square].min() > 0.5
        outside = np.ones_like(heatmap, bool)
        outside[
            square[0].start - 1 : square[0].stop + 1, square[1].start - 1 : square[1].stop + 1
        ] = False
        assert heatmap[outside].max() == 0.0


@pytest.mark.parametrize("final", FINALS[:3])
def test_it_differentiates_the_logit_not_the_softmax_output(final):
    # z_covid = mean(ch0) and z_control = mean(ch0) + 2·mean(ch1). The logit's map is the
    # brightness ReLU(ch0); the softmax's gradient ∝ ∂(z_covid − z_control) = −2·ch1 ≤ 0
    # would give an empty map.
    head = [np.array([[1.0, 1.0], [2.0, 0.0]], np.float32), np.zeros(2, np.float32)]
    images, _ = _images()
    heatmaps = gradcam(_flat_classifier(final, head), images, layer_name="features")
    for heatmap, image in zip(heatmaps, images[..., 0], strict=True):
        block_mean = image.reshape(SIZE // 2, 2, SIZE // 2, 2).mean(axis=(1, 3))
        up = ndimage.zoom(block_mean, 2, order=1, mode="nearest", grid_mode=True)
        np.testing.assert_allclose(heatmap, up / up.max(), atol=1e-5)


def test_the_control_class_lights_everything_but_the_square():
    images, squares = _images()
    heatmaps = gradcam(_flat_classifier(), images, layer_name="features", class_index=0)
    np.testing.assert_allclose(heatmaps, _expected(images, 0), atol=1e-5)
    assert heatmaps[0][3:5, 3:5].max() == 0.0  # the square's core (bilinear blurs its rim)
    assert heatmaps[0][squares[1]].min() > 0.5


def test_it_finds_the_feature_maps_of_a_nested_encoder_by_default():
    images, _ = _images()
    heatmaps = gradcam(_nested_classifier(), images, batch_size=1)
    np.testing.assert_allclose(heatmaps, _expected(images, 1), atol=1e-5)


def test_an_image_with_no_covid_evidence_gives_an_empty_map():
    dark = np.full((1, SIZE, SIZE, 1), 0.1, np.float32)
    assert np.all(gradcam(_flat_classifier(), dark) == 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer_name": "nope"}, "no top-level layer 'nope'.*features"),
        ({"layer_name": "global_average_pooling2d"}, "4-D"),
        ({"class_index": 2}, "class_index"),
        ({"images": np.zeros((SIZE, SIZE, 1), np.float32)}, r"\(N, H, W, C\)"),
    ],
)
def test_bad_requests_get_a_clear_error(kwargs, message):
    model = _flat_classifier()
    if kwargs.get("layer_name") == "global_average_pooling2d":
        kwargs["layer_name"] = model.layers[2].name
    images = kwargs.pop("images", _images()[0])
    with pytest.raises(ValueError, match=message):
        gradcam(model, images, **kwargs)


def test_it_refuses_a_backend_without_an_autodiff_implementation(monkeypatch):
    model = _flat_classifier()
    monkeypatch.setattr(keras.backend, "backend", lambda: "openvino")
    with pytest.raises(NotImplementedError, match="'openvino'.*tensorflow, torch, jax"):
        gradcam(model, _images()[0])


def test_it_works_under_the_jax_backend():
    pytest.importorskip("jax", reason="jax is not installed here; Grad-CAM under jax is untested")
    script = textwrap.dedent(
        """
        import keras
        import numpy as np
        from mlworker.gradcam import gradcam
        from tests.mlworker import test_gradcam as t
        images, _ = t._images()
        heatmaps = gradcam(t._flat_classifier(), images, layer_name="features")
        np.testing.assert_allclose(heatmaps, t._expected(images, 1), atol=1e-5)
        print("ok", keras.backend.backend())
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok jax" in done.stdout


def test_it_explains_a_build_classifier_network_beside_an_infection_map(artifacts_dir):
    from mlworker.maps import infection_map
    from mlworker.nets import build_classifier, feature_layer_name
    from mlworker.plots import map_and_gradcam_figure, save_figure

    keras.utils.set_random_seed(0)
    model = build_classifier("tiny", input_shape=(64, 64, 3))
    yy, xx = np.mgrid[0:64, 0:64]
    xray = (50 + 150 * np.exp(-((xx - 40) ** 2 + (yy - 24) ** 2) / 150)).astype(np.uint8)
    rgb = np.repeat(xray[None, ..., None], 3, axis=-1).astype(np.float32)
    named = gradcam(model, rgb, layer_name=feature_layer_name("tiny"))
    default = gradcam(model, rgb)  # the last feature-map layer is the same one
    np.testing.assert_allclose(named, default)
    assert named.shape == (1, 64, 64) and named.min() >= 0.0 and named.max() <= 1.0
    prob = (xray.astype(np.float32) - 50) / 150
    figure = map_and_gradcam_figure(xray, infection_map(xray, prob), named[0])
    png, svg = save_figure(figure, artifacts_dir / f"gradcam_{keras.backend.backend()}")
    assert png.stat().st_size > 0 and svg.stat().st_size > 0
