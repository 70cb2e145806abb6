"""Loading pretrained encoder weights from local files; nothing here ever downloads.

- "imagenet": keras.applications' own no-top file, looked up by its standard name in
  $COLLABMASK_WEIGHTS_DIR and in Keras' cache ($KERAS_HOME/models, default ~/.keras/models).
- CheXNet: the widely shared Keras CheXNet file (a full DenseNet-121 with a 14-unit sigmoid
  "predictions" head, e.g. brucechou1983_CheXNet_Keras_0.3.0_weights.h5). We rebuild that full
  model, load the file into it, and copy every encoder layer's weights over by layer name.
- A path: that file, into the encoder (CheXNet format for encoder="chexnet", keras.applications'
  no-top format otherwise).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from mlworker.nets.encoders import SPECS, Encoder
from mlworker.networks import FROM_SCRATCH

CHEXNET_FILE = "brucechou1983_CheXNet_Keras_0.3.0_weights.h5"
CHEXNET_CLASSES = 14  # ChestX-ray14 findings: the head the CheXNet file was saved with
WEIGHT_KEYWORDS = ("imagenet", "chexnet", "pretrained")
# What a foreign or damaged file makes Keras/h5py raise while loading.
_LOAD_ERRORS = (ValueError, KeyError, OSError, TypeError, IndexError)


def weights_dirs() -> list[Path]:
    """Where named weight files are looked up, in order."""
    dirs = []
    if os.environ.get("COLLABMASK_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["COLLABMASK_WEIGHTS_DIR"]).expanduser())
    keras_home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    dirs.append(Path(keras_home).expanduser() / "models")
    return list(dict.fromkeys(dirs))


def find_weights_file(file_name: str) -> Path:
    """The first `file_name` in weights_dirs(), or FileNotFoundError naming it and where we looked."""
    dirs = weights_dirs()
    for directory in dirs:
        if (directory / file_name).is_file():
            return directory / file_name
    raise FileNotFoundError(
        f"weights file {file_name} not found; looked in: {', '.join(str(d) for d in dirs)}. "
        "Weights are never downloaded: copy the file into one of these folders "
        "(or set COLLABMASK_WEIGHTS_DIR), or pass its path as encoder_weights."
    )


def resolve_weights(encoder_name: str, encoder_weights: str | os.PathLike | None) -> Path | None:
    """Checks `encoder_weights` for this encoder and returns the file to load (None: random init)."""
    if encoder_weights is None:
        return None
    if encoder_name in FROM_SCRATCH:
        raise ValueError(
            f"the {encoder_name} encoder has no pretrained weights; use encoder_weights=None"
        )
    keyword = encoder_weights.lower() if isinstance(encoder_weights, str) else None
    if keyword == "pretrained":
        keyword = "chexnet" if encoder_name == "chexnet" else "imagenet"
    if keyword == "imagenet":
        if encoder_name == "chexnet":
            raise ValueError(
                "encoder 'chexnet' takes CheXNet weights: pass encoder_weights='chexnet' "
                f"(looks for {CHEXNET_FILE}) or a file path; for ImageNet weights use "
                "encoder='densenet121'"
            )
        return find_weights_file(SPECS[encoder_name].imagenet_file)
    if keyword == "chexnet":
        if encoder_name != "chexnet":
            raise ValueError(
                f"CheXNet weights fit encoder 'chexnet', not {encoder_name!r}; "
                f"use encoder_weights='imagenet' or a file path for {encoder_name!r}"
            )
        return find_weights_file(CHEXNET_FILE)
    if not isinstance(encoder_weights, str | os.PathLike):
        raise TypeError(
            f"encoder_weights must be None, one of {', '.join(WEIGHT_KEYWORDS)}, or a file path; "
            f"got {type(encoder_weights).__name__}"
        )
    path = Path(encoder_weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"encoder weights file not found: {path} "
            f"(encoder_weights takes None, {', '.join(WEIGHT_KEYWORDS)}, or a file path)"
        )
    return path


def load_encoder_weights(encoder: Encoder, path: Path, input_shape: tuple[int, int, int]) -> None:
    """Loads `path` into the encoder's layers; a file that does not fit raises ValueError."""
    if encoder.spec.name == "chexnet":
        _load_chexnet(encoder, path, input_shape)
        return
    try:
        encoder.application.load_weights(str(path))
    except _LOAD_ERRORS as exc:
        raise ValueError(
            f"{path} does not fit the {encoder.spec.label} encoder (expected keras.applications' "
            f"no-top {encoder.spec.label} weights, like {encoder.spec.imagenet_file}): {exc}"
        ) from exc


def chexnet_reference_model(input_shape: tuple[int, int, int]) -> keras.Model:
    """The model the CheXNet Keras file was saved from: DenseNet-121 + GAP + Dense(14, sigmoid)."""
    base = keras.applications.DenseNet121(
        include_top=False, weights=None, input_shape=input_shape, pooling="avg"
    )
    head = keras.layers.Dense(CHEXNET_CLASSES, activation="sigmoid", name="predictions")
    return keras.Model(base.inputs, head(base.output), name="chexnet")


def _load_chexnet(encoder: Encoder, path: Path, input_shape: tuple[int, int, int]) -> None:
    # The file's own layer names may be Keras 2 style ("conv1/conv") while Keras 3 writes
    # "conv1_conv", so the file goes into the matching full model first (legacy .h5 files load
    # by layer order, which both Keras versions share); from there we copy by Keras 3 names.
    reference = chexnet_reference_model(input_shape)
    try:
        reference.load_weights(str(path))
    except _LOAD_ERRORS as exc:
        raise ValueError(
            f"{path} is not a CheXNet weights file: expected a DenseNet-121 with a "
            f"{CHEXNET_CLASSES}-unit 'predictions' head, like {CHEXNET_FILE}: {exc}"
        ) from exc
    for layer in encoder.layers:
        if not layer.weights:
            continue
        try:
            source = reference.get_layer(layer.name)
        except ValueError as exc:
            raise ValueError(
                f"CheXNet file {path} has no layer {layer.name!r} for the encoder"
            ) from exc
        layer.set_weights(source.get_weights())
