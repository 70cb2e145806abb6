"""The click-refinement network: a small U-Net from (radiograph, current mask, click disks,
zone map) to the refined infection mask, and `refine`, the one predict path a server uses.

Small on purpose: one click must show its refined mask within 300 ms on two CPU cores at
256², and it is retrained from scratch on CPU. The default is four poolings over widths
(8, 16, 32, 64, 96), max pooling down and bilinear upsampling up: 0.39 M parameters,
1.7 GFLOP per 256² input; on a 6-minute CPU budget it beat (16, 32, 64, 96, 128) (0.92 M,
5.8 GFLOP), which got through a third of the epochs (bench/README.md). The
first layer, `ClickPrompt`, passes its input through and carries the click radius and
whether a zone map is expected, so a saved file tells the server how to encode clicks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np
from PIL import Image

from mlworker.interactive.clicks import BASE_CHANNELS, Click, as_clicks, interactive_input
from mlworker.nets.blocks import concat, mask_head
from mlworker.networks import INTERACTIVE
from mlworker.predict import THRESHOLD

DEFAULT_WIDTHS = (8, 16, 32, 64, 96)
# Disk radius at 256² (about 2 % of the image side), scaled with the working size.
RADIUS_AT_256 = 5.0
MODEL_NAME = INTERACTIVE


def default_radius(size: int) -> float:
    return max(2.0, RADIUS_AT_256 * size / 256)


@keras.saving.register_keras_serializable(package="collabmask")
class ClickPrompt(keras.layers.Layer):
    """Identity on the input; its config is the click encoding the model was trained with."""

    def __init__(self, radius: float, zones: bool, **kwargs):
        super().__init__(**kwargs)
        self.radius, self.zones = float(radius), bool(zones)

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"radius": self.radius, "zones": self.zones}


def build_interactive(
    size: int,
    *,
    zones: bool = True,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    radius: float | None = None,
) -> keras.Model:
    """The refinement U-Net for `size`² inputs (a multiple of 2**(len(widths) - 1)); 4 input
    channels, 5 with the zone map; one float32 sigmoid channel named "mask"."""
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths needs at least two positive widths, got {widths!r}")
    step = 2 ** (len(widths) - 1)
    if not isinstance(size, int) or size < step or size % step:
        raise ValueError(f"size must be a positive multiple of {step}, got {size!r}")
    radius = default_radius(size) if radius is None else float(radius)
    channels = BASE_CHANNELS + int(zones)
    inputs = keras.Input((size, size, channels), name="prompt_input")
    x = ClickPrompt(radius, zones, name="prompt")(inputs)
    skips = []
    for level, width in enumerate(widths[:-1]):
        x = conv_block(x, width, name=f"enc{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = conv_block(x, widths[-1], name="bottom")
    for level in reversed(range(len(widths) - 1)):
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{level}_up")(x)
        x = concat([x, skips[level]], name=f"dec{level}_concat")
        x = conv_block(x, widths[level], name=f"dec{level}")
    return keras.Model(inputs, mask_head(x), name=MODEL_NAME)


def conv_block(x, filters: int, name: str):
    """Two 3x3 conv-BN-ReLU, as mlworker.nets.blocks.conv_block, with BatchNorm momentum 0.9:
    the network is retrained from scratch on a few hundred accepted masks, and the default
    0.99 leaves the inference statistics far from the training ones after so few steps."""
    for part in ("a", "b"):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", use_bias=False, name=f"{name}{part}_conv"
        )(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}{part}_bn")(x)
        x = keras.layers.Activation("relu", name=f"{name}{part}_relu")(x)
    return x


def prompt_spec(model: keras.Model) -> tuple[int, float, bool]:
    """(working size, click radius, zones) of a refinement network."""
    try:
        layer = model.get_layer("prompt")
    except ValueError:
        raise ValueError(f"{model.name!r} is not a click-refinement network") from None
    return int(model.input_shape[1]), layer.radius, layer.zones


def _resize(array: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    if array.shape[:2] == size:
        return np.asarray(array, np.float32)
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    return np.asarray(img.resize((size[1], size[0]), resample), np.float32)


def refine_probabilities(
    model: keras.Model,
    image: np.ndarray,
    mask: np.ndarray | None,
    clicks: Iterable[Click | Sequence],
    zones: Iterable[str] | None = None,
) -> np.ndarray:
    """The refined infection probability map, (H, W) float32 at the image's resolution.

    The image (greyscale [0, 255]) and mask go to the model's working size (bilinear /
    nearest), clicks are scaled with them; clicks outside the image are an error.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        image = image.mean(axis=-1) if image.shape[-1] == 3 else image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"image must be (H, W) or (H, W, 1|3), got shape {np.shape(image)}")
    shape = image.shape
    clicks = as_clicks(clicks, shape)
    size, radius, with_zones = prompt_spec(model)
    work = (size, size)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape[:2] != shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {shape}")
        mask = _resize(np.asarray(mask != 0, np.float32), work, Image.Resampling.NEAREST)
    scaled = [
        Click(
            min(int((c.row + 0.5) * size / shape[0]), size - 1),
            min(int((c.col + 0.5) * size / shape[1]), size - 1),
            c.positive,
        )
        for c in clicks
    ]
    x = interactive_input(
        _resize(image, work, Image.Resampling.BILINEAR),
        mask,
        scaled,
        zones,
        radius=radius,
        with_zones=with_zones,
    )
    prob = np.asarray(model.predict_on_batch(x[None]), np.float32)[0, ..., 0]
    return np.clip(_resize(prob, shape, Image.Resampling.BILINEAR), 0.0, 1.0)


def refine(
    model: keras.Model,
    image: np.ndarray,
    mask: np.ndarray | None,
    clicks: Iterable[Click | Sequence],
    zones: Iterable[str] | None = None,
    *,
    threshold: float = THRESHOLD,
) -> np.ndarray:
    """The refined mask (bool (H, W)): `refine_probabilities` at `threshold`."""
    return refine_probabilities(model, image, mask, clicks, zones) >= threshold


def refiner(model: keras.Model, *, threshold: float = THRESHOLD):
    """`refine` bound to a model, in the form session.simulate_session calls."""

    def model_fn(image, mask, clicks, zones):
        return refine(model, image, mask, clicks, zones, threshold=threshold)

    return model_fn


def training_config(model: keras.Model) -> dict[str, Any]:
    """What a job records beside the saved file."""
    size, radius, zones = prompt_spec(model)
    return {"kind": MODEL_NAME, "size": size, "radius": radius, "zones": zones}
