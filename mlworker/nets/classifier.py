"""build_classifier: COVID-19 detection from the same encoders, for the Grad-CAM comparison.

Encoder, global average pooling, a Dense layer giving the class scores ("logits") and a softmax
("predictions", float32). Grad-CAM differentiates the logits with respect to the encoder's last
feature map, whose layer name `feature_layer_name(encoder)` gives.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras

from mlworker.nets.encoders import (
    SPECS,
    build_encoder,
    check_encoder_widths,
    check_input_shape,
    freeze,
)
from mlworker.nets.weights import load_encoder_weights, resolve_weights
from mlworker.networks import ENCODERS, resolve_name

LOGITS_LAYER = "logits"


def build_classifier(
    encoder: str,
    *,
    input_shape: Sequence[int] = (224, 224, 3),
    encoder_weights: str | os.PathLike | None = None,
    frozen: bool = False,
    classes: int = 2,
    encoder_widths: Sequence[int] | None = None,
) -> keras.Model:
    """A classifier taking RGB pixels in [0, 255]; output (batch, classes) softmax, float32.

    Same `encoder`, `encoder_weights`, `frozen` and `encoder_widths` semantics as build_segmenter. The paper
    trains it with categorical cross-entropy, Adam at lr 1e-5, for 10 epochs.
    """
    encoder = resolve_name(encoder, ENCODERS, "encoder")
    spec = SPECS[encoder]
    shape = check_input_shape(input_shape, spec)
    if not isinstance(classes, int) or classes < 2:
        raise ValueError(f"classes must be an integer >= 2, got {classes!r}")
    stage_widths = check_encoder_widths(encoder, encoder_widths)
    weights_path = resolve_weights(encoder, encoder_weights)

    inputs = keras.Input(shape, name="image")
    backbone = build_encoder(encoder, inputs, shape, widths=stage_widths)
    if weights_path is not None:
        load_encoder_weights(backbone, weights_path, shape)
    if frozen:
        freeze(backbone)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    x = keras.layers.Dense(classes, name=LOGITS_LAYER)(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"classifier_{encoder}")
