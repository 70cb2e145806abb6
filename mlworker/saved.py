"""Trained networks on disk: one .keras file each, written and read back here so that callers
need no Keras import of their own."""

from __future__ import annotations

from pathlib import Path

import keras

import mlworker.interactive.model  # noqa: F401 - registers the click-refinement network's layer
import mlworker.losses  # noqa: F401 - registers the loss a model was compiled with when saved
import mlworker.nets  # noqa: F401 - registers the custom layers the saved models use
from mlworker.nets import count_params


def save_model(model: keras.Model, path: Path) -> tuple[int, int]:
    """Write the network to `path` (.keras); returns its (trainable, non-trainable) counts."""
    model.save(path)
    return count_params(model)


def load_model(path: Path) -> keras.Model:
    """A network saved by `save_model` (or any .keras file using collabmask's layers)."""
    return keras.saving.load_model(path)
