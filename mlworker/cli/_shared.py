"""What the model commands share: error exit, loading a trained model, reading a folder."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from mlworker.data import DataError, load_qata_folder


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def load_trained_model(path: Path, size: int | None):
    """(model, working size): a saved `.keras` network and the size to feed it (`size`, else
    the model's own input size). Raises DataError with a message for the user."""
    import keras

    import mlworker.losses  # noqa: F401  (registers the loss a saved model refers to)
    import mlworker.nets  # noqa: F401  (registers the custom layers)
    from mlworker.predict import model_input_size

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many kinds for a bad file; all mean the same
        raise DataError(f"cannot load {path}: {exc}") from None
    size = size or (model_input_size(model) or (None,))[0]
    if size is None:
        raise DataError("the model accepts any size: give --size")
    return model, size


def read_folder(data: Path, size: int, names: list[str] | None = None):
    """The cases of a QaTa-COV19-layout folder at `size`, with a progress bar."""
    with tqdm(desc="reading", unit="img", disable=None, leave=False) as bar:
        return load_qata_folder(
            data, size=size, names=names, progress=lambda done, total: bar.update(1)
        )
