"""The progress callback every `model.fit` of ours runs with: progress after each batch and
epoch, cancellation polled every batch, and the per-epoch history.

Progress events are dicts: {"event": "batch" | "epoch", "epoch", "epochs", "batch",
"batches"} and the logs as floats, with Dice beside any IoU (mlworker.metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras

from mlworker.metrics import dice_from_iou

Progress = Callable[[dict[str, Any]], None]


class TrainingCancelled(Exception):
    """should_cancel() said yes: fit stops at once, in the middle of an epoch."""


def with_dice(logs: Mapping[str, Any]) -> dict[str, float]:
    """Logs as floats, plus Dice (F1) from IoU: both come from one confusion matrix over
    the epoch, where Dice = 2 IoU / (1 + IoU) holds exactly."""
    out = {k: float(v) for k, v in logs.items()}
    for prefix in ("", "val_"):
        if f"{prefix}iou" in out:
            out[f"{prefix}dice"] = dice_from_iou(out[f"{prefix}iou"])
    return out


class TrainingProgress(keras.callbacks.Callback):
    """Reports every batch and epoch to `progress`, raises TrainingCancelled when
    `should_cancel()` says so after a batch, and appends each epoch's logs to `history`.

    `epoch_done(epoch, record)` runs after the history and before the epoch's progress
    event: a subclass keeps what it must there (checkpoints), so "epoch N done" is only
    heard once epoch N is kept.
    """

    def __init__(
        self,
        *,
        epochs: int,
        batches: int,
        progress: Progress | None,
        should_cancel: Callable[[], bool] | None,
        history: dict[str, list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.epochs, self.batches = epochs, batches
        self.progress, self.should_cancel = progress, should_cancel
        self.history = {} if history is None else history
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.progress is not None:
            event = {
                "event": "batch",
                "epoch": self.epoch + 1,
                "epochs": self.epochs,
                "batch": batch + 1,
                "batches": self.batches,
            }
            self.progress(event | with_dice(logs or {}))
        if self.should_cancel is not None and self.should_cancel():
            raise TrainingCancelled

    def on_epoch_end(self, epoch, logs=None):
        record = with_dice(logs or {})
        for key, value in record.items():
            self.history.setdefault(key, []).append(value)
        self.epoch_done(epoch, record)
        if self.progress is not None:
            event = {"event": "epoch", "epoch": epoch + 1, "epochs": self.epochs}
            self.progress(event | {"batch": self.batches, "batches": self.batches} | record)

    def epoch_done(self, epoch: int, record: dict[str, float]) -> None:
        """What a subclass keeps after each epoch; nothing here."""
