"""Segmentation and classification network builders (Keras 3, backend-agnostic).

- build_segmenter(arch, encoder, ...): U-Net, UNet++ or DLA on DenseNet-121, CheXNet,
  Inception-v3, ResNet-50, a slim from-scratch encoder for CPU training (two conv-BN-ReLU per
  stage, widths set by encoder_widths) or a tiny test encoder; one float32 sigmoid channel
  at input size.
- build_classifier(encoder, ...): encoder + global average pooling + 2-unit softmax.
- Both take RGB pixels in [0, 255]: the encoder's preprocessing is a layer inside the model
  (EncoderPreprocess), so a saved model is self-contained. Do not normalise inputs beforehand.
- feature_layer_name(encoder): the last convolutional feature layer, for Grad-CAM.
- count_params(model) -> (trainable, non_trainable); param_table() prints all twelve pairs.
- The names these take (ARCHS, ENCODERS, their labels) live in mlworker.networks, which
  imports no Keras, so the web application can use them too.

Importing this package registers the custom layers, so `keras.saving.load_model` needs no
custom_objects for models built here.
"""

from __future__ import annotations

import numpy as np

from mlworker.nets.blocks import DECODER_WIDTHS
from mlworker.nets.classifier import LOGITS_LAYER, build_classifier
from mlworker.nets.encoders import SLIM_WIDTHS, SPECS, feature_layer_name
from mlworker.nets.layers import EncoderPreprocess, ResizeTo, preprocess_numpy
from mlworker.nets.params import count_params, param_table
from mlworker.nets.segmenter import build_segmenter
from mlworker.nets.weights import CHEXNET_FILE, find_weights_file, weights_dirs
from mlworker.networks import ENCODERS, resolve_name


def preprocess_input(images: np.ndarray, encoder: str) -> np.ndarray:
    """What the model's own "preprocess" layer does to [0, 255] RGB, in numpy.

    The networks built here already apply it; this is for code that inspects or feeds encoder
    inputs directly (and for checking against keras.applications' preprocess_input).
    """
    return preprocess_numpy(images, SPECS[resolve_name(encoder, ENCODERS, "encoder")].preprocess)


__all__ = [
    "CHEXNET_FILE",
    "DECODER_WIDTHS",
    "LOGITS_LAYER",
    "SLIM_WIDTHS",
    "EncoderPreprocess",
    "ResizeTo",
    "build_classifier",
    "build_segmenter",
    "count_params",
    "feature_layer_name",
    "find_weights_file",
    "param_table",
    "preprocess_input",
    "weights_dirs",
]
