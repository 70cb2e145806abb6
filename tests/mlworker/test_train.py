"""Training: progress, checkpoints, resume after a crash, cancel, seeds, the train CLI."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from PIL import Image

from mlworker.__main__ import main
from mlworker.losses import HybridLoss
from mlworker.train import CheckpointMismatch, train_segmenter
from tests.mlworker.test_data import write_qata_folder

pytestmark = [
    pytest.mark.keras,
    # Keras' TensorFlow backend converts tensors with np.array(x) on every step; noise only.
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

SIZE = 32
CONFIG = {
    "arch": "unet",
    "encoder": "tiny",
    "input_shape": (SIZE, SIZE, 3),
    "decoder_widths": (8, 8, 8, 8, 8),
}


def blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark noisy radiographs with one bright square each; the square is the mask."""
    rng = np.random.default_rng(seed)
    images = rng.normal(60, 10, (n, SIZE, SIZE))
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        r, c = rng.integers(4, SIZE - 14, 2)
        masks[i, r : r + 10, c : c + 10] = True
    images[masks] += 120
    return np.clip(images, 0, 255).astype(np.uint8), masks


def small_model(seed: int = 0) -> keras.Model:
    """A few layers (BatchNorm included, so moving statistics must survive a resume):
    TensorFlow traces it in a fraction of the segmenter's time, which keeps the tests of
    the training loop's mechanics quick on a shared CPU."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def weights_of(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def same_weights(a: keras.Model, b: keras.Model) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(weights_of(a), weights_of(b), strict=True))


def train(**overrides):
    """train_segmenter on the small model unless `model_or_config` says otherwise."""
    if "model_or_config" not in overrides:
        overrides["model_or_config"] = small_model()
    kwargs = {
        "train_data": blobs(8),
        "epochs": 2,
        "batch_size": 4,
        "lr": 1e-2,
        "seed": 0,
    }
    return train_segmenter(**(kwargs | overrides))


@pytest.mark.slow
def test_training_lowers_the_loss_and_reports_every_batch_and_epoch(tmp_path):
    events = []
    result = train(
        model_or_config=CONFIG,
        val_data=blobs(4, seed=1),
        epochs=3,
        checkpoint_dir=tmp_path,
        progress=events.append,
    )
    assert result.epochs_done == 3 and not result.cancelled
    assert result.model.dtype_policy.name == "float32"  # "auto": no GPU on this machine
    assert result.history["loss"][-1] < result.history["loss"][0]
    batch_events = [(e["epoch"], e["batch"]) for e in events if e["event"] == "batch"]
    assert batch_events == [(ep, b) for ep in (1, 2, 3) for b in (1, 2)]
    epoch_events = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epoch_events] == [1, 2, 3]
    for event in epoch_events:
        assert event["epochs"] == 3 and event["batches"] == 2
        assert {"loss", "iou", "dice", "val_loss", "val_iou", "val_dice"} <= set(event)
    assert [e["val_loss"] for e in epoch_events] == result.history["val_loss"]
    # best.keras is the epoch with the lowest validation loss, and it reloads.
    assert result.best_path == tmp_path / "best.keras"
    best = keras.saving.load_model(result.best_path)
    x_val, y_val = blobs(4, seed=1)
    val_loss = best.evaluate(np.repeat(x_val[..., None], 3, -1).astype("float32"),
                             y_val[..., None].astype("float32"), verbose=0)[0]  # fmt: skip
    assert val_loss == pytest.approx(min(result.history["val_loss"]), rel=1e-4)


def test_a_crashed_run_resumes_at_the_next_epoch_and_ends_where_an_unbroken_one_does(tmp_path):
    def crash_after_epoch_2(event):
        if event["event"] == "epoch" and event["epoch"] == 2:
            raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        train(epochs=4, checkpoint_dir=tmp_path, progress=crash_after_epoch_2)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 2 and state["model"] == "epoch-0002.keras"

    events = []
    resumed = train(epochs=4, checkpoint_dir=tmp_path, progress=events.append)
    assert sorted({e["epoch"] for e in events}) == [3, 4]
    assert resumed.epochs_done == 4 and len(resumed.history["loss"]) == 4
    assert resumed.last_path == tmp_path / "epoch-0004.keras"
    assert sorted(p.name for p in tmp_path.glob("*.keras")) == ["epoch-0004.keras"]
    # The optimizer state came back too: Adam has taken every step of all four epochs.
    assert int(resumed.model.optimizer.iterations) == 4 * 2

    unbroken = train(epochs=4)
    assert resumed.history["loss"][:2] == pytest.approx(unbroken.history["loss"][:2], rel=1e-5)
    for a, b in zip(weights_of(resumed.model), weights_of(unbroken.model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_with_ema_the_checkpoints_and_validation_hold_the_moving_average_of_the_weights(tmp_path):
    model = small_model()
    raw = []  # the weights the optimiser steps, after every batch

    def record(event):
        if event["event"] == "batch":
            raw.append([keras.ops.convert_to_numpy(w) for w in model.trainable_weights])

    momentum = 0.5
    val = blobs(4, seed=1)
    result = train(
        model_or_config=model, val_data=val, epochs=2, checkpoint_dir=tmp_path,
        progress=record, ema_momentum=momentum,
    )  # fmt: skip
    assert len(raw) == 4
    average = raw[0]
    for step in raw[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, step, strict=True)]
    saved = keras.saving.load_model(result.last_path)
    for a, b in zip(average, saved.trainable_weights, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), a, rtol=1e-5, atol=1e-6)
    assert not all(
        np.allclose(keras.ops.convert_to_numpy(b), w)
        for w, b in zip(raw[-1], saved.trainable_weights, strict=True)
    )
    # The epoch's validation loss is the averaged network's.
    x_val, y_val = val
    val_loss = saved.evaluate(np.repeat(x_val[..., None], 3, -1).astype("float32"),
                              y_val[..., None].astype("float32"), verbose=0)[0]  # fmt: skip
    assert val_loss == pytest.approx(result.history["val_loss"][-1], rel=1e-4)


def test_an_ema_run_resumed_after_a_crash_ends_where_an_unbroken_one_does(tmp_path):
    def crash_after_epoch_1(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        train(epochs=3, checkpoint_dir=tmp_path, progress=crash_after_epoch_1, ema_momentum=0.5)
    resumed = train(epochs=3, checkpoint_dir=tmp_path, ema_momentum=0.5)
    unbroken = train(epochs=3, ema_momentum=0.5)
    for a, b in zip(weights_of(resumed.model), weights_of(unbroken.model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(CheckpointMismatch, match="ema_momentum"):
        train(epochs=3, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="between 0 and 1"):
        train(ema_momentum=1.0)


def test_a_lovasz_run_validates_and_saves_with_the_lovasz_term(tmp_path):
    val = blobs(4, seed=1)
    result = train(val_data=val, epochs=1, checkpoint_dir=tmp_path, lovasz_weight=0.5)
    saved = keras.saving.load_model(result.best_path)
    assert isinstance(saved.loss, HybridLoss) and saved.loss.lovasz == 0.5
    x_val, y_val = np.repeat(val[0][..., None], 3, -1).astype("float32"), val[1][..., None]
    with_term = saved.evaluate(x_val, y_val.astype("float32"), verbose=0)[0]
    assert with_term == pytest.approx(result.history["val_loss"][-1], rel=1e-4)
    saved.compile(loss=HybridLoss())
    plain = saved.evaluate(x_val, y_val.astype("float32"), verbose=0, return_dict=True)["loss"]
    assert plain < with_term - 0.05
    # The weight names the run: a checkpoint of it is not resumed as a run without it.
    with pytest.raises(CheckpointMismatch, match="lovasz_weight"):
        train(val_data=val, epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="Lovász weight"):
        train(lovasz_weight=-1)


def test_a_finished_run_is_not_trained_again(tmp_path):
    train(epochs=1, checkpoint_dir=tmp_path)
    events = []
    again = train(epochs=1, checkpoint_dir=tmp_path, progress=events.append)
    assert again.epochs_done == 1 and events == []


def test_cancel_stops_at_the_next_batch_and_keeps_the_last_checkpoint(tmp_path):
    events = []

    def cancel_in_epoch_2():
        return bool(events) and (events[-1]["epoch"], events[-1]["batch"]) == (2, 1)

    result = train(
        epochs=3, checkpoint_dir=tmp_path, progress=events.append, should_cancel=cancel_in_epoch_2
    )
    assert result.cancelled and result.epochs_done == 1
    assert events[-1] == events[-1] | {"event": "batch", "epoch": 2, "batch": 1}
    assert result.last_path == tmp_path / "epoch-0001.keras" and result.last_path.is_file()
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 1
    # Picking the job up again continues with epoch 2.
    events = []
    resumed = train(epochs=3, checkpoint_dir=tmp_path, progress=events.append)
    assert min(e["epoch"] for e in events) == 2 and resumed.epochs_done == 3


def test_a_run_cancelled_before_it_starts_trains_nothing():
    result = train(should_cancel=lambda: True)
    assert result.cancelled and result.epochs_done == 0 and result.history == {}


@pytest.mark.slow
def test_the_same_seed_gives_the_same_weights_and_another_seed_other_weights():
    first, second, other = (train(model_or_config=CONFIG, epochs=1, seed=s) for s in (3, 3, 4))
    # Bit for bit, on TensorFlow's and PyTorch's CPU kernels alike.
    assert same_weights(first.model, second.model)
    assert not same_weights(first.model, other.model)


def test_repeated_cases_make_longer_epochs_without_a_batch_of_one():
    events = []
    train(epochs=1, train_indices=[0, 1, 2, 0, 1, 2, 0, 1, 2, 3], progress=events.append)
    assert events[-1]["batches"] == 3  # 10 positions in batches of 4
    # 9 cases: the ninth joins the second batch (PyTorch cannot train on some single images).
    events = []
    train(epochs=1, train_data=blobs(9), progress=events.append)
    assert events[-1]["batches"] == 2


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    train(epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match="another run .different lr"):
        train(epochs=2, checkpoint_dir=tmp_path, lr=1e-3)
    with pytest.raises(CheckpointMismatch, match="different data_sha256"):  # other cases
        train(epochs=2, checkpoint_dir=tmp_path, train_data=blobs(8, seed=5))


def test_the_model_must_match_the_image_size():
    small = blobs(4)[0][:, :16, :16], blobs(4)[1][:, :16, :16]
    with pytest.raises(ValueError, match="takes 32x32 images"):
        train(train_data=small)
    with pytest.raises(ValueError, match="pass a config"):
        train(mixed_precision=True)


@pytest.mark.skipif(
    keras.config.backend() == "torch",
    reason="PyTorch has no float16 convolution gradients on CPU; mixed precision is for GPUs",
)
def test_mixed_precision_when_asked_builds_a_float16_model_with_float32_loss():
    mixed = train(model_or_config=CONFIG, epochs=1, mixed_precision=True)
    assert mixed.model.dtype_policy.name == "mixed_float16"
    assert isinstance(mixed.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(mixed.history["loss"]).all()
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        train(epochs=0)
    with pytest.raises(ValueError, match="no cases"):
        train(train_data=(np.zeros((0, SIZE, SIZE)), np.zeros((0, SIZE, SIZE))))
    with pytest.raises(ValueError, match="3 images but 2 masks"):
        train(train_data=(np.zeros((3, SIZE, SIZE)), np.zeros((2, SIZE, SIZE))))
    with pytest.raises(ValueError, match="mixed_precision"):
        train(mixed_precision="sometimes")
    images, masks = blobs(4)
    with pytest.raises(ValueError, match="0/255"):
        train(train_data=(images, masks.astype(np.uint8) * 255))
    with pytest.raises(ValueError, match="indices"):
        train(train_indices=[0, 9], checkpoint_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
def test_train_cli_trains_a_fold_and_resumes_instead_of_retraining(tmp_path, capsys):
    data = tmp_path / "data"
    write_qata_folder(data, n=3, unlabelled=1, controls=5, size=40)
    out = tmp_path / "model.keras"
    argv = ["train", "--data", str(data), "--arch", "unet", "--encoder", "tiny", "--size", "32",
            "--epochs", "1", "--batch", "4", "--folds", "2", "--fold", "1", "--out", str(out)]  # fmt: skip

    assert main(argv) == 0

    err = capsys.readouterr().err
    assert f"wrote {out}" in err and "epoch 1/1" in err
    model = keras.saving.load_model(out)
    assert model.input_shape == (None, 32, 32, 3)
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["config"]["encoder"] == "tiny" and (info["folds"], info["fold"]) == (2, 1)
    # 8 labelled cases (3 masks + 5 controls; the maskless case is left out), 5 patients.
    assert info["train_cases"] + info["val_cases"] == 8 and info["val_cases"] > 0
    # Detection training: COVID-19 cases repeated (augmented) up to the controls.
    covid = info["train_cases"] - info["train_controls"]
    assert 0 < covid < info["train_controls"]
    assert info["train_positions"] == 2 * info["train_controls"]
    assert len(info["history"]["val_loss"]) == 1
    # The same command again finds the finished checkpoint and trains nothing.
    assert main(argv) == 0
    assert "epoch 1/1" not in capsys.readouterr().err


def test_train_cli_refuses_bad_arguments_with_exit_2(tmp_path, capsys):
    data = tmp_path / "data"
    write_qata_folder(data, n=2, unlabelled=1, size=16)
    (tmp_path / "empty" / "Images").mkdir(parents=True)
    (tmp_path / "nomasks" / "Images").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "nomasks" / "Images" / "a.png")
    out = str(tmp_path / "m.keras")
    cases = [
        (["--data", str(tmp_path / "nowhere"), "--out", out], "not a folder"),
        (["--data", str(tmp_path / "empty"), "--out", out], "no images"),
        (["--data", str(tmp_path / "nomasks"), "--out", out], "no labelled cases"),
        (["--data", str(data), "--out", str(tmp_path / "m.h5")], "must end in .keras"),
        (["--data", str(data), "--out", str(tmp_path / "no" / "m.keras")], "does not exist"),
        (["--data", str(data), "--out", out, "--folds", "2"], "go together"),
        (["--data", str(data), "--out", out, "--folds", "2", "--fold", "2"], "0..1"),
        (["--data", str(data), "--out", out, "--folds", "5", "--fold", "0"], "cannot fill"),
        (["--data", str(data), "--out", out, "--encoder", "vgg99", "--size", "16"], "vgg99"),
    ]
    for argv, message in cases:
        assert main(["train", *argv]) == 2, message
        assert message in capsys.readouterr().err
    assert not (tmp_path / "m.keras").exists()
