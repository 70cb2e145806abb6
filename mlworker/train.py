"""Training one segmentation network, as the paper did, in a way a worker can babysit.

Adam (lr 1e-4, β1 0.9, β2 0.999), the hybrid focal + Dice loss, batch 32, 50 epochs,
shift/rotation augmentation on the fly. Building (`build_for_training`: the network from
a config, the optimiser and the loss) is apart from training (`fit_segmenter`: the loop,
checkpoints, resume); `train_segmenter` is the two together. Around `model.fit`:

- a checkpoint after every epoch (model + optimizer state in `epoch-NNNN.keras`, then
  `state.json` naming it, each written to a temporary file and moved into place; the
  JSON is the commit point), and `best.keras` whenever validation loss improves;
- resume: a `checkpoint_dir` that holds a checkpoint continues from the next epoch;
- `progress(dict)` after every batch and epoch; `should_cancel()` polled every batch
  (mlworker.progress, the callback every fit of ours runs with);
- `keras.utils.set_random_seed(seed)`: CPU runs with the same seed give the same weights;
- mixed precision (float16 compute, float32 output and loss) when a GPU is present;
- optionally an exponential moving average of the weights (`ema_momentum`, Polyak
  averaging): validation, checkpoints and the returned model then hold the average, while
  the optimiser keeps stepping the raw weights;
- optionally a Lovász-Jaccard term in the loss (`lovasz_weight`, mlworker.losses).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np

from mlworker.augment import CaseBatches
from mlworker.losses import HybridLoss, check_lovasz
from mlworker.progress import Progress, TrainingCancelled, TrainingProgress

STATE_FILE = "state.json"
BEST_FILE = "best.keras"


@dataclass
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_done: int = 0
    cancelled: bool = False
    last_path: Path | None = None  # the checkpoint of the last finished epoch
    best_path: Path | None = None  # lowest validation loss (the last epoch without validation)


class CheckpointMismatch(ValueError):
    """The checkpoint folder belongs to a different training run."""


def gpu_available() -> bool:
    """Whether the active Keras backend sees a GPU (no backend-specific API elsewhere)."""
    if keras.config.backend() == "torch":
        import torch

        return bool(torch.cuda.is_available())
    try:
        return bool(keras.distribution.list_devices("gpu"))
    except (AttributeError, RuntimeError, ValueError):
        return False


def _check_ema(ema_momentum: float | None) -> None:
    if ema_momentum is not None and not 0 < ema_momentum < 1:
        raise ValueError(f"ema_momentum must lie strictly between 0 and 1, not {ema_momentum!r}")


def compile_segmenter(
    model: keras.Model,
    *,
    lr: float = 1e-4,
    ema_momentum: float | None = None,
    lovasz_weight: float = 0.0,
) -> None:
    """The paper's optimiser and loss; IoU of the infection class as the monitored metric.
    `ema_momentum` (e.g. 0.999) makes Adam keep a moving average of the weights;
    `lovasz_weight` adds that much of the Lovász-Jaccard loss to the hybrid loss."""
    _check_ema(ema_momentum)
    adam = keras.optimizers.Adam(
        learning_rate=lr,
        beta_1=0.9,
        beta_2=0.999,
        use_ema=ema_momentum is not None,
        ema_momentum=0.99 if ema_momentum is None else ema_momentum,
    )
    model.compile(
        optimizer=adam,
        loss=HybridLoss(lovasz=lovasz_weight),
        metrics=[keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.5, name="iou")],
    )


def load_start_weights(path: str | os.PathLike, config: Mapping[str, Any]) -> keras.Model:
    """The segmenter saved in the local file `path`, to train on from where it stopped: it must
    be the network `config` names (arch, encoder) at the same input shape. Nothing is
    downloaded; a missing or foreign file raises ValueError saying which and why."""
    import mlworker.nets  # noqa: F401  (registers the custom layers the file uses)

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"start weights {path} not found (a .keras file on this machine)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise ValueError(f"start weights {path} are not a Keras model file: {exc}") from None
    want = f"{config['arch']}_{config['encoder']}"
    if model.name != want:
        raise ValueError(f"start weights {path} hold a {model.name} network, not {want}")
    shape = tuple(config.get("input_shape", model.input_shape[1:]))
    if tuple(model.input_shape[1:]) != shape:
        raise ValueError(
            f"start weights {path} take {tuple(model.input_shape[1:])} inputs, not {shape}"
        )
    return model


def _build(config: Mapping[str, Any], *, mixed: bool) -> keras.Model:
    from mlworker.nets import build_segmenter

    kwargs = dict(config)
    if kwargs.get("start_weights"):  # float32, as saved: mixed precision only when built here
        return load_start_weights(kwargs["start_weights"], kwargs)
    kwargs.pop("start_weights", None)
    arch, encoder = kwargs.pop("arch"), kwargs.pop("encoder")
    previous = keras.config.dtype_policy()
    if mixed:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        return build_segmenter(arch, encoder, **kwargs)
    finally:
        keras.config.set_dtype_policy(previous)


def _check_mixed_precision(model_or_config: Any, mixed_precision: Any) -> None:
    if mixed_precision not in ("auto", True, False):
        raise ValueError(f"mixed_precision must be 'auto', True or False, not {mixed_precision!r}")
    if not isinstance(model_or_config, Mapping) and mixed_precision is True:
        raise ValueError("mixed precision is chosen when building: pass a config, not a model")


def build_for_training(
    model_or_config: keras.Model | Mapping[str, Any],
    *,
    lr: float = 1e-4,
    mixed_precision: bool | Literal["auto"] = "auto",
    ema_momentum: float | None = None,
    lovasz_weight: float = 0.0,
) -> keras.Model:
    """A segmenter compiled with the paper's optimiser and loss (compile_segmenter).

    `model_or_config` is a Keras model, or `build_segmenter` arguments such as
    {"arch": "unet", "encoder": "tiny", "input_shape": (224, 224, 3)}, optionally with
    "start_weights": a saved segmenter of that network to start from (load_start_weights)
    instead of random weights; mixed precision
    ("auto": on a GPU; True: always) applies only to models built here from a config.
    """
    _check_mixed_precision(model_or_config, mixed_precision)
    if isinstance(model_or_config, Mapping):
        mixed = mixed_precision is True or (mixed_precision == "auto" and gpu_available())
        model = _build(model_or_config, mixed=mixed)
    else:
        model = model_or_config
    compile_segmenter(model, lr=lr, ema_momentum=ema_momentum, lovasz_weight=lovasz_weight)
    return model


def _atomic_save_model(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")  # Keras insists on the .keras suffix
    model.save(tmp)
    os.replace(tmp, path)


def _atomic_write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _digest(*arrays: np.ndarray | None) -> str:
    """Content hash of the training data, so a checkpoint only resumes on the same cases."""
    h = hashlib.sha256()
    for arr in arrays:
        if arr is not None:
            arr = np.ascontiguousarray(arr)
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


class _AverageForValidation(keras.callbacks.SwapEMAWeights):
    """With an EMA optimiser: the moving average sits in the model for validation and from the
    end of each epoch to the start of the next, so the checkpoints hold it; the raw weights
    train. A checkpoint therefore stores the average as the model's weights and the raw
    weights in the optimiser's average slots, and a resumed run starts with them swapped."""

    def __init__(self, *, average_in_model: bool):
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = average_in_model


class _Checkpoints(TrainingProgress):
    """The progress callback, plus epoch sync and a checkpoint after every epoch."""

    def __init__(self, *, batches, epochs, ckpt_dir, state, progress, should_cancel):
        super().__init__(
            epochs=epochs, batches=len(batches), progress=progress,
            should_cancel=should_cancel, history=state["history"],
        )  # fmt: skip
        self.case_batches = batches
        self.ckpt_dir, self.state = ckpt_dir, state

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.case_batches.epoch = epoch  # batch content follows the true epoch, also on resume

    def epoch_done(self, epoch: int, record: dict[str, float]) -> None:
        state = self.state
        state["epoch"] = epoch + 1
        val_loss = record.get("val_loss")
        improved = val_loss is not None and (
            state["best_val_loss"] is None or val_loss < state["best_val_loss"]
        )
        if improved:
            state["best_val_loss"] = val_loss
        if self.ckpt_dir is not None:
            name = f"epoch-{epoch + 1:04d}.keras"
            _atomic_save_model(self.model, self.ckpt_dir / name)
            if improved:
                _atomic_save_model(self.model, self.ckpt_dir / BEST_FILE)
                state["best"] = BEST_FILE
            state["model"] = name
            _atomic_write_json(state, self.ckpt_dir / STATE_FILE)
            for old in self.ckpt_dir.glob("epoch-*.keras"):
                if old.name != name:
                    old.unlink()


def _check_arrays(data: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        images, masks = data
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an (images, masks) pair") from None
    images, masks = np.asarray(images), np.asarray(masks)
    if len(images) == 0:
        raise ValueError(f"{what} holds no cases")
    if len(images) != len(masks):
        raise ValueError(f"{what}: {len(images)} images but {len(masks)} masks")
    if masks.dtype != bool and not ((masks == 0) | (masks == 1)).all():
        raise ValueError(f"{what}: masks must hold 0/1 (or bool), not e.g. 0/255")
    return images, masks


def fit_segmenter(
    *,
    build: Callable[[], keras.Model],
    config: Mapping[str, Any] | None,
    train_data: tuple[np.ndarray, np.ndarray],
    val_data: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int = 50,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    augment: bool = True,
    train_indices: Sequence[int] | None = None,
    ema_momentum: float | None = None,
    lovasz_weight: float = 0.0,
) -> TrainResult:
    """Trains (or resumes training) the compiled model `build()` makes, on uint8/float
    images in [0, 255] and binary masks; `train_indices` picks and may repeat training cases
    (repeats are augmented, see `balance_by_augmentation`).

    `config` (None for a model built elsewhere), `lr`, `ema_momentum` and `lovasz_weight`
    are what `build` builds with (the last two only name the run here: the optimiser and
    the loss hold them); with
    the batch size, seed and data they name the run. When `checkpoint_dir` holds a
    checkpoint of the same run, the model is loaded from it instead of built and training
    goes on from the next epoch; a checkpoint of another run raises CheckpointMismatch.
    """
    _check_ema(ema_momentum)
    check_lovasz(lovasz_weight)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, lr > 0 (got {epochs}, {batch_size}, {lr})"
        )
    images, masks = _check_arrays(train_data, "train_data")
    val = _check_arrays(val_data, "val_data") if val_data is not None else None
    n_train = len(images) if train_indices is None else len(train_indices)
    fingerprint = _jsonable(
        {
            "config": None if config is None else dict(config),
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            **({} if ema_momentum is None else {"ema_momentum": ema_momentum}),
            **({"lovasz_weight": lovasz_weight} if lovasz_weight else {}),
            "n_train": n_train,
            "n_val": None if val is None else len(val[0]),
            "data_sha256": _digest(
                images,
                masks,
                None if train_indices is None else np.asarray(train_indices),
                *(val or ()),
            ),
        }
    )
    # Built first so that bad indices fail before anything is loaded or written.
    batches = CaseBatches(
        images, masks, batch_size=batch_size, indices=train_indices,
        augment=augment, shuffle=True, seed=seed,
    )  # fmt: skip
    val_batches = CaseBatches(*val, batch_size=batch_size) if val is not None else None
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    keras.utils.set_random_seed(seed)

    stored = _read_state(ckpt_dir)
    if stored is not None:
        if stored["fingerprint"] != fingerprint:
            differ = sorted(
                k for k in fingerprint | stored["fingerprint"]
                if fingerprint.get(k) != stored["fingerprint"].get(k)
            )  # fmt: skip
            raise CheckpointMismatch(
                f"{ckpt_dir} holds a checkpoint of another run (different {', '.join(differ)}); "
                "use a fresh folder"
            )
        import mlworker.nets  # noqa: F401  (registers the custom layers a checkpoint may use)

        model = keras.saving.load_model(ckpt_dir / stored["model"])
        state = stored
    else:
        model = build()
        state = {
            "epoch": 0,
            "model": None,
            "best": None,
            "best_val_loss": None,
            "history": {},
            "fingerprint": fingerprint,
        }

    expected = tuple(model.input_shape[1:3])
    if None not in expected and expected != tuple(images.shape[1:3]):
        raise ValueError(
            f"the model takes {expected[0]}x{expected[1]} images, the data is "
            f"{images.shape[1]}x{images.shape[2]}: load it at that size"
        )

    def result(cancelled: bool) -> TrainResult:
        last = ckpt_dir / state["model"] if ckpt_dir and state["model"] else None
        best = ckpt_dir / state["best"] if ckpt_dir and state["best"] else last
        return TrainResult(model, state["history"], state["epoch"], cancelled, last, best)

    if state["epoch"] >= epochs:
        return result(cancelled=False)
    if should_cancel is not None and should_cancel():
        return result(cancelled=True)
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)

    loop = _Checkpoints(
        batches=batches, epochs=epochs, ckpt_dir=ckpt_dir, state=state,
        progress=progress, should_cancel=should_cancel,
    )  # fmt: skip
    callbacks: list[keras.callbacks.Callback] = [loop]
    if getattr(model.optimizer, "use_ema", False):
        # Before the checkpoints, so that they save the average.
        callbacks.insert(0, _AverageForValidation(average_in_model=stored is not None))
    try:
        model.fit(
            batches,
            validation_data=val_batches,
            epochs=epochs,
            initial_epoch=state["epoch"],
            callbacks=callbacks,
            shuffle=False,  # CaseBatches shuffles per (seed, epoch); Keras' own order would not resume
            verbose=0,
        )
    except TrainingCancelled:
        return result(cancelled=True)
    return result(cancelled=False)


def train_segmenter(
    *,
    model_or_config: keras.Model | Mapping[str, Any],
    lr: float = 1e-4,
    mixed_precision: bool | Literal["auto"] = "auto",
    ema_momentum: float | None = None,
    lovasz_weight: float = 0.0,
    **fit: Any,
) -> TrainResult:
    """Builds (build_for_training) and trains (fit_segmenter, which takes the other keyword
    arguments: train_data, epochs, checkpoint_dir...) a segmenter; a checkpoint of the same
    run (same config, lr, batch size, seed and data) in `checkpoint_dir` is resumed instead
    of building anew."""
    _check_mixed_precision(model_or_config, mixed_precision)
    return fit_segmenter(
        build=lambda: build_for_training(
            model_or_config,
            lr=lr,
            mixed_precision=mixed_precision,
            ema_momentum=ema_momentum,
            lovasz_weight=lovasz_weight,
        ),
        config=model_or_config if isinstance(model_or_config, Mapping) else None,
        lr=lr,
        ema_momentum=ema_momentum,
        lovasz_weight=lovasz_weight,
        **fit,
    )


def _read_state(ckpt_dir: Path | None) -> dict[str, Any] | None:
    if ckpt_dir is None or not (ckpt_dir / STATE_FILE).is_file():
        return None
    state = json.loads((ckpt_dir / STATE_FILE).read_text())
    if not state.get("model") or not (ckpt_dir / state["model"]).is_file():
        raise CheckpointMismatch(f"{ckpt_dir / STATE_FILE} names a missing model file")
    return state
