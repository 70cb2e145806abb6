"""DLA decoder: iterative deep aggregation upsampling (Yu et al., "Deep Layer Aggregation", 2018).

The segmentation head of DLA (DLA-Up): aggregation runs from the deepest stage outward. Step 1
merges stride 32 into stride 16; step 2 merges the stride-16 results into stride 8, and so on,
each step re-aggregating *every* deeper result produced so far. Within a step an IDA chain
projects its inputs to the step's width (1x1 conv-BN-ReLU), upsamples them to the step's
resolution, then folds them in one at a time with aggregation nodes (3x3 conv-BN-ReLU over the
concatenation of the running aggregate and the next input). After four steps the aggregate is
at stride 2; a last stage brings it to the input resolution. Upsampling is bilinear, like the
fixed bilinear deconvolutions of the reference code.
"""

from __future__ import annotations

from mlworker.nets.blocks import concat, conv_bn_relu, full_resolution_block, resize_to


def dla_decoder(features: list, *, grid: list[tuple[int, int]], widths: tuple[int, ...]):
    """`features`: encoder maps on grid[1..5] (strides 2..32); returns the stride-1 map."""
    levels = list(features)
    # Widths of the aggregates landing at strides 2, 4, 8, 16.
    channels = [widths[3], widths[2], widths[1], widths[0]]
    for step in range(4):
        base = 3 - step  # index in `levels` of the stride this step lands on
        out, size = channels[base], grid[base + 1]
        inputs = []
        for k, x in enumerate(levels[base:]):
            name = f"dec_ida{step}_in{k}"
            if x.shape[-1] != out:
                x = conv_bn_relu(x, out, 1, name=f"{name}_proj")
            inputs.append(resize_to(x, size, name=f"{name}_up"))
        aggregate, results = inputs[0], []
        for k, x in enumerate(inputs[1:], start=1):
            name = f"dec_ida{step}_node{k}"
            aggregate = conv_bn_relu(concat([aggregate, x], name=f"{name}_concat"), out, 3, name)
            results.append(aggregate)
        # The next step re-aggregates these, now all at this step's stride.
        levels[base + 1 :] = results
    return full_resolution_block(aggregate, grid[0], widths[4], name="dec_ida_full")
