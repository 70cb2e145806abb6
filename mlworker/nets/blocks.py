"""Building blocks the three decoders share: the decoder grid, conv blocks, the head."""

from __future__ import annotations

import math

import keras

from mlworker.nets.layers import ResizeTo

# Output widths of the decoder stages at strides 16, 8, 4, 2 and 1 (the U-Net choice of the
# common segmentation libraries; the paper's decoders are of this size).
DECODER_WIDTHS = (256, 128, 64, 32, 16)


def decoder_grid(height: int, width: int) -> list[tuple[int, int]]:
    """Feature-map sizes the decoder works on, at strides 1, 2, 4, 8, 16, 32.

    Each level is the previous one halved and rounded up. DenseNet and ResNet maps fall on this
    grid for inputs divisible by 32; Inception-v3's valid-padding maps (e.g. 109, 52, 25, 12, 5
    at 224) never do and are resized onto it, which is what makes any accepted input size come
    out at exactly the input resolution.
    """
    sizes = [(height, width)]
    for _ in range(5):
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return sizes


def check_widths(widths) -> tuple[int, ...]:
    widths = tuple(widths)
    if len(widths) != 5 or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(
            f"decoder_widths needs five positive integers (strides 16, 8, 4, 2, 1), got {widths!r}"
        )
    return widths


def resize_to(x, size: tuple[int, int], name: str):
    """`x` resized to `size` (no layer at all when it is already that size)."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return ResizeTo(*size, name=name)(x)


def align_features(features: list, grid: list[tuple[int, int]]) -> list:
    """Encoder maps at strides 2..32 put onto grid[1..5]."""
    return [
        resize_to(feature, grid[level], name=f"dec_align{level}")
        for level, feature in enumerate(features, start=1)
    ]


def conv_bn_relu(x, filters: int, kernel: int, name: str):
    x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def conv_block(x, filters: int, name: str):
    """Two 3x3 conv-BN-ReLU: the U-Net / UNet++ node."""
    x = conv_bn_relu(x, filters, 3, name=f"{name}a")
    return conv_bn_relu(x, filters, 3, name=f"{name}b")


def concat(tensors: list, name: str):
    return keras.layers.Concatenate(axis=-1, name=name)(tensors)


def full_resolution_block(x, size: tuple[int, int], filters: int, name: str):
    """The last decoder stage: from stride 2 up to the input size, with no skip to merge."""
    x = resize_to(x, size, name=f"{name}_up")
    return conv_block(x, filters, name=name)


def mask_head(x, name: str = "mask"):
    """One sigmoid channel. float32 so mixed_float16 training keeps a stable output and loss."""
    x = keras.layers.Conv2D(1, 3, padding="same", name=f"{name}_logits")(x)
    return keras.layers.Activation("sigmoid", dtype="float32", name=name)(x)
