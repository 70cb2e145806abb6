"""Several trained detectors as one network: the mean of their probability maps.

The combined network is an ordinary Keras model (one input, the members side by side, an
Average layer), so it is saved, registered, deployed, evaluated and asked for infection maps
exactly like a single detector. Pure ML: no Django.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras


def mean_ensemble(members: Sequence[keras.Model], *, name: str = "ensemble") -> keras.Model:
    """One network whose output is the mean of `members`' outputs (each (N, H, W, 1) in [0, 1]).

    The members must take the same input shape; each must have its own name (a run trains
    each architecture and encoder once, and the name says which)."""
    members = list(members)
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 networks, got {len(members)}")
    shapes = {tuple(m.input_shape[1:]) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"the networks take different inputs: {sorted(shapes)}")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"two networks share a name: {names}")
    inputs = keras.Input(shape=shapes.pop(), name="image")
    outputs = [member(inputs) for member in members]
    mean = keras.layers.Average(name="mask", dtype="float32")(outputs)
    return keras.Model(inputs, mean, name=name)
