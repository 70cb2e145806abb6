"""U-Net decoder (Ronneberger et al. 2015) on a pretrained encoder.

At each stride from 16 down to 2: upsample the deeper map, concatenate the encoder's skip of that
stride, two 3x3 conv-BN-ReLU. A last stage without skip brings it to the input resolution.
"""

from __future__ import annotations

from mlworker.nets.blocks import concat, conv_block, full_resolution_block, resize_to


def unet_decoder(features: list, *, grid: list[tuple[int, int]], widths: tuple[int, ...]):
    """`features`: encoder maps on grid[1..5] (strides 2..32); returns the stride-1 map."""
    x = features[4]  # stride 32: the bottom of the U
    for level in (4, 3, 2, 1):  # merge the skip of stride 2**level
        name = f"dec_up{level}"
        x = resize_to(x, grid[level], name=f"{name}_up")
        x = concat([x, features[level - 1]], name=f"{name}_concat")
        x = conv_block(x, widths[4 - level], name=name)
    return full_resolution_block(x, grid[0], widths[4], name="dec_up0")
