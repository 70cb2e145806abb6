"""Training the final detector and the Grad-CAM classifiers.

Degerli et al. 2021, "COVID-19 detection": a network trained on COVID-19 cases with their
masks and on control cases with empty masks gives a probability map Ŷ; a case is COVID-19
when any pixel of Ŷ is at or above 0.5 (mlworker.detection.rule). Controls outnumber
COVID-19 cases, so the COVID-19 cases are repeated, each repeat augmented, until the
classes are balanced (`balance_by_augmentation`). The Grad-CAM comparison uses classifiers
on the same encoders: global average pooling and a 2-unit softmax, categorical
cross-entropy, Adam at lr 1e-5, 10 epochs.

Everything here works on arrays at the network's input size; annotation.worker.tasks.detector
loads the cases and stores what comes out. Pure ML: no Django.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any

import keras
import numpy as np

from mlworker.augment import CaseBatches, balance_by_augmentation
from mlworker.progress import TrainingCancelled, TrainingProgress
from mlworker.train import TrainResult, train_segmenter

CLASSIFIER_LR = 1e-5  # paper: Adam, lr 1e-5, 10 epochs, categorical cross-entropy
CLASSIFIER_EPOCHS = 10


def check_cases(images: np.ndarray, masks: np.ndarray, covid: np.ndarray) -> np.ndarray:
    """The labels as bool, once the cases are checked: images (N, H, W), masks alike,
    empty for every control."""
    images, masks, covid = np.asarray(images), np.asarray(masks), np.asarray(covid, bool)
    if images.ndim != 3 or masks.shape != images.shape or covid.shape != (len(images),):
        raise ValueError(
            f"need images (N, H, W), masks of the same shape and one label per case; got "
            f"{images.shape}, {masks.shape}, {covid.shape}"
        )
    if len(images) == 0:
        raise ValueError("no cases")
    flat = masks.reshape(len(masks), -1)
    if flat[~covid].any():
        bad = int(np.flatnonzero(~covid & flat.any(axis=1))[0])
        raise ValueError(f"case {bad} is a control but its mask is not empty")
    return covid


def balanced_indices(covid: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Training indices with the COVID-19 cases repeated up to the number of controls."""
    covid = np.asarray(covid, bool)
    return balance_by_augmentation(np.flatnonzero(covid), np.flatnonzero(~covid), seed=seed)


def train_detector(
    *,
    config: Mapping[str, Any],
    images: np.ndarray,
    masks: np.ndarray,
    covid: np.ndarray,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    augment: bool = False,
    checkpoint_dir: str | PathLike | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train one detection network (a segmenter) on COVID-19 cases and controls, balanced.

    config: build_segmenter arguments ({"arch", "encoder", "input_shape", ...}).
    images uint8 (N, H, W) at the input size; masks bool, empty for controls; covid: labels.
    augment=False augments only the repeats made for balancing, as the paper did; True
    augments every case. Checkpoints and resume work as in train_segmenter.
    """
    covid = check_cases(images, masks, covid)
    if not covid.any():
        raise ValueError("the training cases hold no COVID-19 case with a mask")
    return train_segmenter(
        model_or_config=config,
        train_data=(images, masks),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        should_cancel=should_cancel,
        augment=augment,
        train_indices=balanced_indices(covid, seed=seed),
    )


# --- Grad-CAM classifiers ---------------------------------------------------------------
class _LabelBatches(keras.utils.PyDataset):
    """CaseBatches (same shuffling, balancing repeats and augmentation) with one-hot labels.

    Each case's "mask" is constant (all ones for COVID-19, all zeros for a control); shifts
    and rotations fill with the nearest pixel, so an augmented mask stays constant and its
    mean is the label.
    """

    def __init__(self, cases: CaseBatches) -> None:
        super().__init__()
        self.cases = cases

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.cases[batch]
        covid = y.reshape(len(y), -1).mean(axis=1) > 0.5
        return x, np.stack([~covid, covid], axis=1).astype(np.float32)

    def on_epoch_end(self) -> None:
        self.cases.on_epoch_end()


@dataclass
class ClassifierResult:
    model: keras.Model
    history: dict[str, list[float]]
    cancelled: bool


def train_classifier(
    *,
    encoder: str,
    images: np.ndarray,
    covid: np.ndarray,
    epochs: int = CLASSIFIER_EPOCHS,
    batch_size: int = 32,
    lr: float = CLASSIFIER_LR,
    seed: int = 0,
    frozen: bool = False,
    encoder_weights: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> ClassifierResult:
    """The paper's Grad-CAM classifier on `encoder`, trained on the same balanced cases.

    No checkpoints: ten epochs of a classifier are cheap next to the detector, so a job
    that dies here simply trains it again.
    """
    from mlworker.nets import build_classifier

    images, covid = np.asarray(images), np.asarray(covid, bool)
    if images.ndim != 3 or covid.shape != (len(images),) or not len(images):
        raise ValueError(f"need images (N, H, W) and one label each; got {images.shape}")
    if covid.all() or not covid.any():
        raise ValueError("a classifier needs both COVID-19 and control cases")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, lr > 0 (got {epochs}, {batch_size}, {lr})"
        )
    keras.utils.set_random_seed(seed)
    model = build_classifier(
        encoder,
        input_shape=(*images.shape[1:3], 3),
        frozen=frozen,
        encoder_weights=encoder_weights,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    constant = np.broadcast_to(covid[:, None, None], images.shape)
    cases = CaseBatches(
        images, constant, batch_size=batch_size, indices=balanced_indices(covid, seed=seed),
        shuffle=True, seed=seed,
    )  # fmt: skip
    watch = TrainingProgress(
        epochs=epochs, batches=len(cases), progress=progress, should_cancel=should_cancel
    )
    try:
        model.fit(_LabelBatches(cases), epochs=epochs, callbacks=[watch], verbose=0)
    except TrainingCancelled:
        return ClassifierResult(model, watch.history, cancelled=True)
    return ClassifierResult(model, watch.history, cancelled=False)
