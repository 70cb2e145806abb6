"""build_segmenter: any of the three decoders on any encoder, one sigmoid channel at input size."""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras

from mlworker.nets.blocks import (
    DECODER_WIDTHS,
    align_features,
    check_widths,
    decoder_grid,
    mask_head,
)
from mlworker.nets.dla import dla_decoder
from mlworker.nets.encoders import (
    SPECS,
    build_encoder,
    check_encoder_widths,
    check_input_shape,
    freeze,
)
from mlworker.nets.unet import unet_decoder
from mlworker.nets.unetpp import unetpp_decoder
from mlworker.nets.weights import load_encoder_weights, resolve_weights
from mlworker.networks import ARCHS, ENCODERS, resolve_name


def build_segmenter(
    arch: str,
    encoder: str,
    *,
    input_shape: Sequence[int] = (224, 224, 3),
    encoder_weights: str | os.PathLike | None = None,
    frozen: bool = False,
    decoder_widths: Sequence[int] = DECODER_WIDTHS,
    deep_supervision: bool = False,
    encoder_widths: Sequence[int] | None = None,
) -> keras.Model:
    """A segmentation network taking RGB pixels in [0, 255] and giving a [0, 1] infection map.

    arch: "unet", "unetpp" or "dla"; encoder: "densenet121", "chexnet", "inceptionv3",
    "resnet50", "slim" or "tiny" (common spellings such as "UNet++" or "DenseNet-121" work too).
    encoder_weights: None (random), "imagenet", "chexnet" (encoder="chexnet" only),
    "pretrained" (whichever of the two the encoder has) or a file path; see nets/weights.py.
    frozen: encoder layers non-trainable (BatchNorm in inference mode), decoder trainable.
    deep_supervision (UNet++ only): four outputs, from X(0,1)...X(0,4); the last is "mask".
    encoder_widths (slim only): its five stage widths, strides 2..32 (default 16 ... 256).
    The output, named "mask", has shape (batch, height, width, 1) and is always float32.
    """
    arch = resolve_name(arch, ARCHS, "arch")
    encoder = resolve_name(encoder, ENCODERS, "encoder")
    spec = SPECS[encoder]
    shape = check_input_shape(input_shape, spec)
    widths = check_widths(decoder_widths)
    stage_widths = check_encoder_widths(encoder, encoder_widths)
    if deep_supervision and arch != "unetpp":
        raise ValueError(f"deep_supervision is a UNet++ option; arch {arch!r} has one output")
    # Resolve the weights file before building anything, so a wrong name fails fast.
    weights_path = resolve_weights(encoder, encoder_weights)

    inputs = keras.Input(shape, name="image")
    backbone = build_encoder(encoder, inputs, shape, widths=stage_widths)
    if weights_path is not None:
        load_encoder_weights(backbone, weights_path, shape)
    if frozen:
        freeze(backbone)

    grid = decoder_grid(shape[0], shape[1])
    features = align_features(backbone.features, grid)
    if arch == "unet":
        tops = [unet_decoder(features, grid=grid, widths=widths)]
    elif arch == "unetpp":
        tops = unetpp_decoder(features, grid=grid, widths=widths, deep_supervision=deep_supervision)
    else:
        tops = [dla_decoder(features, grid=grid, widths=widths)]
    names = [f"mask_{j}" for j in range(1, len(tops))] + ["mask"]
    outputs = [mask_head(top, name=name) for top, name in zip(tops, names, strict=True)]
    return keras.Model(
        inputs, outputs if len(outputs) > 1 else outputs[0], name=f"{arch}_{encoder}"
    )
