"""The final detector: segmentation networks trained on every accepted mask plus controls,
evaluated per pixel and per case; classifiers on the same encoders for Grad-CAM.

Degerli et al. 2021, "COVID-19 detection": a network trained on COVID-19 cases with their
masks and on control cases with empty masks gives a probability map Ŷ; a case is COVID-19
when any pixel of Ŷ is at or above 0.5. Controls outnumber COVID-19 cases, so the COVID-19
cases are repeated, each repeat augmented, until the classes are balanced
(`balance_by_augmentation`). The Grad-CAM comparison uses classifiers on the same encoders:
global average pooling and a 2-unit softmax, categorical cross-entropy, Adam at lr 1e-5,
10 epochs.

Everything here works on arrays at the network's input size; annotation.worker.tasks.detector loads
the cases and stores what comes out. Pure ML: no Django.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any

import keras
import numpy as np
from PIL import Image

from mlworker.augment import CaseBatches, balance_by_augmentation, to_model_input
from mlworker.curves import ScoreHistogram
from mlworker.detect import DEFAULT_THRESHOLD, Detection, detect
from mlworker.maps import infection_map, resize_probability
from mlworker.metrics import Counts, confusion_counts, mean_dice, per_image_counts
from mlworker.predict import model_input_size, predict_probabilities
from mlworker.train import TrainResult, train_segmenter

# Probability maps are stored as 8-bit PNGs, so finer pixel-score bins would add nothing.
HISTOGRAM_BINS = 256
EVAL_CHUNK = 64  # cases predicted at once: memory stays bounded on large test sets
CLASSIFIER_LR = 1e-5  # paper: Adam, lr 1e-5, 10 epochs, categorical cross-entropy
CLASSIFIER_EPOCHS = 10


def _check_cases(images: np.ndarray, masks: np.ndarray, covid: np.ndarray) -> np.ndarray:
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
    covid = _check_cases(images, masks, covid)
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


@dataclass
class Evaluation:
    """A detector on its test cases: the numbers the paper's tables are made of."""

    pixel: Counts  # every test case: COVID-19 against its mask, controls against empty
    pixel_covid: Counts  # COVID-19 cases only
    case: Counts  # detection: COVID-19 when max Ŷ ≥ threshold
    truth: np.ndarray  # bool per case
    max_probs: np.ndarray  # float per case
    severities: np.ndarray  # infected share of each image
    histogram: ScoreHistogram  # pixel scores, for pixel-level ROC / PR
    mean_dice: float
    ms_per_sample: float
    threshold: float

    def to_json(self) -> dict[str, Any]:
        def counts(c: Counts) -> dict[str, int]:
            return {"tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn}

        return {
            "pixel": counts(self.pixel),
            "pixel_covid": counts(self.pixel_covid),
            "case": counts(self.case),
            "truth": [int(t) for t in self.truth],
            "max_probs": [round(float(p), 6) for p in self.max_probs],
            "severities": [round(float(s), 6) for s in self.severities],
            "histogram": {
                "bins": self.histogram.bins,
                "positives": self.histogram.positives.tolist(),
                "negatives": self.histogram.negatives.tolist(),
            },
            "mean_dice": round(self.mean_dice, 6),
            "ms_per_sample": round(self.ms_per_sample, 3),
            "threshold": self.threshold,
            "n_cases": len(self.truth),
        }


def _timed_predict(model: keras.Model, images: np.ndarray, batch_size: int):
    started = time.perf_counter()
    probs = predict_probabilities(model, images, batch_size=batch_size)
    return probs, time.perf_counter() - started


def evaluate_detector(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    covid: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Predict the test cases and count pixel and case outcomes; time the prediction.

    ms_per_sample is the wall time of prediction divided by the cases, measured after one
    warm-up batch (the first call traces and compiles the graph).
    """
    covid = _check_cases(images, masks, covid)
    n = len(images)
    _timed_predict(model, images[: min(batch_size, n)], batch_size)  # warm-up
    histogram = ScoreHistogram(HISTOGRAM_BINS)
    rows, max_probs, severities, elapsed = [], np.zeros(n), np.zeros(n), 0.0
    for start in range(0, n, EVAL_CHUNK):
        stop = min(start + EVAL_CHUNK, n)
        probs, seconds = _timed_predict(model, images[start:stop], batch_size)
        elapsed += seconds
        rows.append(per_image_counts(masks[start:stop], probs, threshold=threshold))
        for i, prob in enumerate(probs, start=start):
            found = detect(prob, threshold=threshold)
            max_probs[i], severities[i] = found.max_prob, found.severity
            histogram.add(masks[i], prob)
        if progress is not None:
            progress(stop, n)
    per_image = np.concatenate(rows)
    return Evaluation(
        pixel=Counts.total(per_image),
        pixel_covid=Counts.total(per_image[covid]),
        case=confusion_counts(covid, max_probs >= threshold),
        truth=covid,
        max_probs=max_probs,
        severities=severities,
        histogram=histogram,
        mean_dice=mean_dice(per_image),
        ms_per_sample=1000.0 * elapsed / n,
        threshold=threshold,
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


class _Watch(keras.callbacks.Callback):
    def __init__(self, epochs, batches, progress, should_cancel):
        super().__init__()
        self.epochs, self.batches = epochs, batches
        self.progress, self.should_cancel = progress, should_cancel
        self.epoch, self.cancelled = 0, False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.progress is not None:
            info = {"event": "batch", "epoch": self.epoch + 1, "epochs": self.epochs}
            self.progress(info | {"batch": batch + 1, "batches": self.batches, **(logs or {})})
        if self.should_cancel is not None and self.should_cancel():
            self.cancelled = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.progress is not None:
            info = {"event": "epoch", "epoch": epoch + 1, "epochs": self.epochs}
            self.progress(info | {"batch": self.batches, "batches": self.batches, **(logs or {})})


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
    watch = _Watch(epochs, len(cases), progress, should_cancel)
    fit = model.fit(_LabelBatches(cases), epochs=epochs, callbacks=[watch], verbose=0)
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    return ClassifierResult(model, history, watch.cancelled)


def classifier_probabilities(
    model: keras.Model, images: np.ndarray, *, batch_size: int = 16
) -> tuple[np.ndarray, float]:
    """P(COVID-19) per image (uint8 (N, H, W) at the model's size) and ms per sample."""
    x = np.stack([to_model_input(img) for img in np.asarray(images)])
    model.predict_on_batch(x[:batch_size])  # warm-up
    started = time.perf_counter()
    out = [
        np.asarray(model.predict_on_batch(x[i : i + batch_size]))[:, 1]
        for i in range(0, len(x), batch_size)
    ]
    ms = 1000.0 * (time.perf_counter() - started) / len(x)
    return np.concatenate(out).astype(np.float64), ms


def evaluate_classifier(
    model: keras.Model, images: np.ndarray, covid: np.ndarray, *, threshold: float = 0.5
) -> dict[str, Any]:
    """Case-level counts of a classifier (COVID-19 when P ≥ threshold), JSON-ready."""
    covid = np.asarray(covid, bool)
    probs, ms = classifier_probabilities(model, images)
    c = confusion_counts(covid, probs >= threshold)
    return {
        "case": {"tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn},
        "truth": [int(t) for t in covid],
        "probs": [round(float(p), 6) for p in probs],
        "ms_per_sample": round(ms, 3),
        "threshold": threshold,
        "n_cases": len(covid),
    }


# --- one case, as the viewer and live inference show it ------------------------------------
@dataclass
class CaseAnalysis:
    prob: np.ndarray  # float32 (H, W) at the X-ray's resolution
    infection_map: np.ndarray  # uint8 (H, W, 3)
    detection: Detection
    gradcam: np.ndarray | None  # float32 (H, W) in [0, 1], None without a classifier
    classifier_prob: float | None
    ms: dict[str, float]


def _resize_grey(xray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if xray.shape == size:
        return xray
    return np.asarray(Image.fromarray(xray).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def analyse_case(
    detector: keras.Model,
    xray: np.ndarray,
    *,
    classifier: keras.Model | None = None,
    encoder: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> CaseAnalysis:
    """Infection map, verdict and severity of one CXR (uint8 (H, W)); with a classifier
    (and its encoder's name) also its Grad-CAM map of the COVID-19 class."""
    xray = np.asarray(xray)
    if xray.dtype != np.uint8 or xray.ndim != 2:
        raise ValueError(
            f"xray must be a uint8 greyscale (H, W) image, got {xray.dtype} {xray.shape}"
        )
    ms: dict[str, float] = {}
    started = time.perf_counter()
    prob = predict_probabilities(detector, [xray], batch_size=1)[0]
    ms["detector"] = 1000.0 * (time.perf_counter() - started)
    result = CaseAnalysis(
        prob=prob,
        infection_map=infection_map(xray, prob),
        detection=detect(prob, threshold=threshold),
        gradcam=None,
        classifier_prob=None,
        ms=ms,
    )
    if classifier is not None:
        from mlworker.gradcam import gradcam
        from mlworker.nets import feature_layer_name

        if encoder is None:
            raise ValueError("Grad-CAM needs the classifier's encoder name")
        started = time.perf_counter()
        size = model_input_size(classifier) or xray.shape
        x = to_model_input(_resize_grey(xray, size))[None]
        result.classifier_prob = float(np.asarray(classifier.predict_on_batch(x))[0, 1])
        cam = gradcam(classifier, x, layer_name=feature_layer_name(encoder))[0]
        result.gradcam = resize_probability(cam, xray.shape)
        ms["classifier"] = 1000.0 * (time.perf_counter() - started)
    return result


def gradcam_overlay(xray: np.ndarray, cam: np.ndarray, *, opacity: float = 0.5) -> np.ndarray:
    """A Grad-CAM map drawn as the usual jet overlay on the CXR: uint8 (H, W, 3)."""
    from matplotlib import colormaps

    xray = np.asarray(xray)
    if xray.ndim != 2 or np.asarray(cam).shape != xray.shape:
        raise ValueError(f"cam {np.shape(cam)} must match the greyscale CXR {xray.shape}")
    jet = colormaps["jet"](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0
    grey = np.repeat(xray[..., None].astype(np.float64), 3, axis=-1)
    return np.rint((1 - opacity) * grey + opacity * jet).astype(np.uint8)
