"""Candidates: batched probability maps at working resolution, masks, compact PNGs, the CLI."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
from PIL import Image

from cxrio.masks import decode_probability_png, encode_probability_png, mask_to_png
from mlworker.__main__ import main
from mlworker.predict import binarize, predict_probabilities
from tests.mlworker.test_data import write_qata_folder

pytestmark = pytest.mark.keras


def brightness_model(size: int | None = 32) -> keras.Model:
    """Predicts each pixel's brightness (mean of RGB / 255): what goes in comes out, so
    resizing mistakes show up directly."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    conv = keras.layers.Conv2D(1, 1, use_bias=False)
    outputs = conv(x)
    conv.set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32)])
    return keras.Model(inputs, outputs)


def half_bright(h: int, w: int) -> np.ndarray:
    image = np.zeros((h, w), np.uint8)
    image[:, : w // 2] = 255
    return image


def test_maps_come_back_at_each_images_own_resolution():
    images = [half_bright(48, 40), half_bright(20, 24), half_bright(32, 32)]
    probs = predict_probabilities(brightness_model(), images, batch_size=2)
    assert isinstance(probs, list)
    for image, prob in zip(images, probs, strict=True):
        assert prob.shape == image.shape and prob.dtype == np.float32
        assert prob.min() >= 0 and prob.max() <= 1
        h, w = image.shape
        # Left half bright, right half dark, away from the resampled edge.
        assert prob[:, : w // 2 - 3].min() > 0.95 and prob[:, w // 2 + 3 :].max() < 0.05


def test_batch_size_does_not_change_the_maps_and_progress_counts_batches():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 40, 40), dtype=np.uint8)
    events = []
    batched = predict_probabilities(
        brightness_model(), images, batch_size=2, progress=events.append
    )
    single = predict_probabilities(brightness_model(), images, batch_size=1)
    assert isinstance(batched, np.ndarray) and batched.shape == (5, 40, 40)
    np.testing.assert_allclose(batched, single, atol=1e-6)
    assert [(e["batch"], e["batches"], e["done"]) for e in events] == [
        (1, 3, 2),
        (2, 3, 4),
        (3, 3, 5),
    ]


def test_mirror_averages_with_the_mirrored_images_map_mirrored_back():
    # A position-dependent model: brightness times a left-to-right ramp from 1 to 0.
    ramp = np.linspace(1.0, 0.0, 32, dtype=np.float32)[None, None, :, None]
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Lambda(lambda t: t * ramp)(brightness_model()(inputs))
    model = keras.Model(inputs, outputs)
    bright = np.full((2, 32, 32), 255, np.uint8)
    plain = predict_probabilities(model, bright)
    mirrored = predict_probabilities(model, bright, mirror=True)
    np.testing.assert_allclose(plain[0, 0], ramp.ravel(), atol=1e-5)
    # Each pixel gets the mean of its own score and its mirror image's: 0.5 everywhere.
    np.testing.assert_allclose(mirrored, 0.5, atol=1e-5)
    # A left-right symmetric model is unchanged by it.
    images = np.random.default_rng(1).integers(0, 256, (3, 40, 40), dtype=np.uint8)
    np.testing.assert_allclose(
        predict_probabilities(brightness_model(), images, mirror=True),
        predict_probabilities(brightness_model(), images),
        atol=1e-6,
    )


def test_rgb_images_and_size_agnostic_models_work():
    rgb = np.repeat(half_bright(24, 24)[..., None], 3, axis=-1)
    grey = half_bright(16, 20)
    probs = predict_probabilities(brightness_model(size=None), [rgb, grey])
    assert probs[0].shape == (24, 24) and probs[1].shape == (16, 20)
    assert probs[0][:, :10].min() > 0.99 and probs[1][:, 12:].max() < 0.01


def test_a_deep_supervised_model_uses_its_last_output():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    early = keras.layers.Lambda(lambda t: keras.ops.zeros_like(t[..., :1]))(x)
    final = keras.layers.Lambda(lambda t: keras.ops.ones_like(t[..., :1]))(x)
    model = keras.Model(inputs, [early, final])
    (prob,) = predict_probabilities(model, [half_bright(16, 16)])
    assert np.allclose(prob, 1.0)


def test_segmenter_from_nets_predicts_a_map_per_case():
    from mlworker.nets import build_segmenter

    model = build_segmenter("unet", "tiny", input_shape=(32, 32, 3), decoder_widths=(8,) * 5)
    probs = predict_probabilities(model, np.zeros((3, 48, 48), np.uint8), batch_size=2)
    assert probs.shape == (3, 48, 48) and probs.min() >= 0 and probs.max() <= 1


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="image 1"):
        predict_probabilities(brightness_model(), [np.zeros((8, 8)), np.zeros((8, 8, 2))])
    with pytest.raises(ValueError, match="batch_size"):
        predict_probabilities(brightness_model(), [np.zeros((8, 8))], batch_size=0)


def test_binarize_uses_the_half_rule():
    prob = np.array([[0.0, 0.4999], [0.5, 1.0]])
    assert binarize(prob).tolist() == [[False, False], [True, True]]
    assert binarize(prob, 0.3).tolist() == [[False, True], [True, True]]
    with pytest.raises(ValueError, match="threshold"):
        binarize(prob, 1.0)


def test_probability_png_round_trips_within_half_a_grey_level_and_is_compact():
    rows, cols = np.mgrid[:224, :224]
    prob = np.clip(np.exp(-((rows - 90) ** 2 + (cols - 120) ** 2) / 2000.0), 0, 1)
    data = encode_probability_png(prob)
    assert Image.open(io.BytesIO(data)).mode == "L"
    back = decode_probability_png(data)
    assert back.shape == prob.shape and np.abs(back - prob).max() <= 1 / 510 + 1e-7
    assert len(data) < prob.size // 4  # under 2 bits a pixel for a smooth map
    # The 0.5 decision survives quantisation except within half a level of the threshold.
    assert np.array_equal(binarize(back), binarize(prob)) or np.all(
        np.abs(prob[binarize(back) != binarize(prob)] - 0.5) <= 1 / 510
    )


def test_probability_png_refuses_what_is_not_a_probability_map():
    for bad in (np.full((4, 4), 1.5), np.full((4, 4), np.nan), np.zeros((4, 4, 1))):
        with pytest.raises(ValueError):
            encode_probability_png(bad)
    with pytest.raises(ValueError, match="greyscale"):
        decode_probability_png(mask_to_png(np.eye(4, dtype=bool)))
    with pytest.raises(ValueError, match="PNG"):
        decode_probability_png(b"nothing")


def test_predict_cli_writes_qata_masks_and_probability_maps(tmp_path, capsys):
    data = tmp_path / "data"
    names = write_qata_folder(data, n=3, unlabelled=2, size=48)
    model_path = tmp_path / "m.keras"
    brightness_model().save(model_path)
    out = tmp_path / "out"

    code = main(["predict", "--model", str(model_path), "--data", str(data), "--out", str(out)])

    assert code == 0
    assert "wrote 5 masks" in capsys.readouterr().err
    for name in names:
        image = np.asarray(Image.open(data / "Images" / name).resize((32, 32), Image.BILINEAR))
        mask = np.asarray(Image.open(out / "Ground-truths" / f"mask_{name}"))
        prob = decode_probability_png((out / "probabilities" / name).read_bytes())
        assert mask.shape == prob.shape == (32, 32)  # the model's size is the default
        assert set(np.unique(mask)) <= {0, 255}
        # The brightness model's map is the image itself; its mask is the bright blob.
        np.testing.assert_allclose(prob, image / 255, atol=2 / 255)
        assert np.array_equal(mask == 255, prob >= 0.5)


def test_predict_cli_at_a_chosen_working_resolution(tmp_path):
    data = tmp_path / "data"
    write_qata_folder(data, n=2, size=48)
    model_path = tmp_path / "m.keras"
    brightness_model().save(model_path)
    args = [
        "predict",
        "--model",
        str(model_path),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*args, "--size", "40", "--batch", "1"]) == 0
    assert Image.open(tmp_path / "o" / "probabilities" / "case_000.png").size == (40, 40)


def test_predict_cli_refuses_bad_paths_with_exit_2(tmp_path, capsys):
    data = tmp_path / "data"
    write_qata_folder(data, n=1, size=16)
    model_path = tmp_path / "m.keras"
    brightness_model().save(model_path)
    (tmp_path / "empty" / "Images").mkdir(parents=True)
    (tmp_path / "junk.keras").write_bytes(b"not a model")
    cases = [
        (["--model", str(tmp_path / "none.keras"), "--data", str(data)], "no model file"),
        (["--model", str(model_path), "--data", str(tmp_path / "nowhere")], "not a folder"),
        (["--model", str(model_path), "--data", str(tmp_path / "empty")], "no images"),
        (["--model", str(tmp_path / "junk.keras"), "--data", str(data)], "cannot load"),
    ]
    for argv, message in cases:
        assert main(["predict", *argv, "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    argv = ["predict", "--model", str(model_path), "--data", str(data), "--out", str(data)]
    assert main(argv) == 2
    assert "--out must differ" in capsys.readouterr().err
