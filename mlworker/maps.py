"""Infection maps: a network's probability map Ŷ drawn over the chest X-ray.

Degerli et al., "COVID-19 infection map generation and detection from chest X-ray
images" (Health Inf Sci Syst 2021), section "Infection map generation": Ŷ is coloured
with the jet colour scale; the jet image and the X-ray are both taken to HSV; hue and
saturation come from the jet image, value from the X-ray; the result goes back to RGB.
Pixels where Ŷ is zero are not coloured, so the plain X-ray shows there.

Pure numpy + Pillow + matplotlib's colormap table: no Keras, so the web process can
draw maps too.
"""

from __future__ import annotations

import colorsys
import functools
from pathlib import Path

import numpy as np
from PIL import Image

# Pixels with Ŷ below this count as "Ŷ is zero" (paper: uncoloured background).
DEFAULT_EPS = 1e-3
_JET_N = 256  # matplotlib's jet table has 256 entries


@functools.cache
def _jet_unit_rgb() -> np.ndarray:
    """The jet table as RGB at value 1: hsv_to_rgb(H_jet, S_jet, 1), shape (256, 3).

    HSV→RGB is linear in V (every channel is V times a function of H and S), so
    hsv_to_rgb(H_jet, S_jet, V_xray) == V_xray * hsv_to_rgb(H_jet, S_jet, 1). That turns
    the per-pixel HSV round trip into one table lookup and one multiply.
    """
    from matplotlib import colormaps

    lut = colormaps["jet"].resampled(_JET_N)(np.arange(_JET_N))[:, :3]
    unit = np.empty_like(lut)
    for i, (r, g, b) in enumerate(lut):
        h, s, _ = colorsys.rgb_to_hsv(r, g, b)  # paper: H and S of the jet-coloured Ŷ
        unit[i] = colorsys.hsv_to_rgb(h, s, 1.0)
    return unit


def resize_probability(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float probability map to (height, width); float32 in [0, 1]."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape == tuple(shape):
        return prob
    height, width = shape
    resized = Image.fromarray(prob).resize((width, height), Image.Resampling.BILINEAR)
    # Bilinear weights are convex, but Pillow's antialiasing kernel can overshoot by rounding.
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _check_inputs(xray: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xray = np.asarray(xray)
    if xray.dtype != np.uint8:
        raise TypeError(f"xray must be uint8 (got {xray.dtype}); scale it to 0..255 first")
    if not (xray.ndim == 2 or (xray.ndim == 3 and xray.shape[2] == 3)):
        raise ValueError(f"xray must be HxW or HxWx3 (got shape {xray.shape})")
    prob = np.asarray(prob)
    if prob.ndim == 3 and prob.shape[2] == 1:
        prob = prob[..., 0]
    if prob.ndim != 2 or prob.size == 0:
        raise ValueError(f"prob must be a non-empty HxW map (got shape {prob.shape})")
    if not np.issubdtype(prob.dtype, np.floating):
        raise TypeError(f"prob must be a float map in [0, 1] (got {prob.dtype})")
    if not np.all(np.isfinite(prob)):
        raise ValueError("prob contains NaN or infinite values")
    low, high = float(prob.min()), float(prob.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(f"prob must lie in [0, 1] (got min {low:.4g}, max {high:.4g})")
    return xray, prob


def infection_map(xray: np.ndarray, prob: np.ndarray, *, eps: float = DEFAULT_EPS) -> np.ndarray:
    """The infection map of one CXR as uint8 HxWx3 at the X-ray's resolution.

    xray: uint8 HxW (greyscale) or HxWx3 at full resolution.
    prob: float Ŷ in [0, 1], any resolution; resized bilinearly to the X-ray's size.
    eps: pixels with Ŷ < eps show the X-ray unchanged.
    """
    xray, prob = _check_inputs(xray, prob)
    height, width = xray.shape[:2]
    prob = np.clip(resize_probability(prob, (height, width)), 0.0, 1.0)

    # matplotlib's own float → table index rule (Colormap.__call__): floor(Ŷ·N), 1.0 → N-1.
    # N is a power of two, so the product is exact in float32 as in float64.
    index = np.minimum((prob * _JET_N).astype(np.intp), _JET_N - 1)
    # Paper: V from the X-ray's HSV; V = max(R, G, B), which for greyscale is the grey level.
    value = xray if xray.ndim == 2 else xray.max(axis=2)
    # Paper: RGB = hsv_to_rgb(H_jet, S_jet, V_xray) = V_xray · hsv_to_rgb(H_jet, S_jet, 1).
    coloured = _jet_unit_rgb().astype(np.float32)[index] * value[..., None].astype(np.float32)
    out = np.rint(coloured).astype(np.uint8)

    # Paper: where Ŷ is zero the plain X-ray shows.
    plain = prob < eps
    out[plain] = xray[plain][:, None] if xray.ndim == 2 else xray[plain]
    return out


def write_infection_map_png(
    path: str | Path, xray: np.ndarray, prob: np.ndarray, *, eps: float = DEFAULT_EPS
) -> Path:
    """Write the infection map of one CXR as an RGB PNG at the X-ray's resolution."""
    path = Path(path)
    image = infection_map(xray, prob, eps=eps)  # validate before touching the file system
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
    return path
