"""UNet++ decoder: nested dense skip pathways (Zhou et al., DLMIA 2018).

Node X(i,j) sits at depth i (stride 2**(i+1)) and column j. Column 0 is the encoder; every
other node is a conv block over the concatenation of *all* earlier nodes of its row,
X(i,0..j-1), and the upsampled node below-left, X(i+1,j-1). So each skip is a dense chain of
convolutions that bridges the semantic gap between encoder and decoder maps, rather than the
plain copy of U-Net. The output comes from X(0,4); with deep supervision X(0,1..4) each get a
head of their own.
"""

from __future__ import annotations

from mlworker.nets.blocks import concat, conv_block, full_resolution_block, resize_to


def unetpp_decoder(
    features: list,
    *,
    grid: list[tuple[int, int]],
    widths: tuple[int, ...],
    deep_supervision: bool = False,
) -> list:
    """`features`: encoder maps on grid[1..5]; returns the stride-1 map(s) feeding the head(s).

    One map from X(0,4), or with deep supervision four, from X(0,1), ..., X(0,4).
    """
    nodes = {(i, 0): feature for i, feature in enumerate(features)}
    for j in range(1, 5):
        for i in range(0, 5 - j):
            name = f"dec_x{i}{j}"
            below = resize_to(nodes[i + 1, j - 1], grid[i + 1], name=f"{name}_up")
            dense = [nodes[i, k] for k in range(j)] + [below]
            # Nodes of the same depth share the width of the U-Net stage at that stride.
            nodes[i, j] = conv_block(concat(dense, name=f"{name}_concat"), widths[3 - i], name)
    columns = range(1, 5) if deep_supervision else (4,)
    return [
        full_resolution_block(nodes[0, j], grid[0], widths[4], name=f"dec_x0{j}_full")
        for j in columns
    ]
