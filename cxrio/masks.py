"""Binary masks: 1-bit PNG bytes, pixel hashes and the working resolution; and the networks'
probability maps stored beside them as 8-bit greyscale PNGs (quantisation error ≤ 1/510).

No Django here; the import, the review screens and the workers all use these, so a mask
drawn, imported or predicted is stored, hashed and compared the same way.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from cxrio.images import ImageError, open_pillow


class MaskError(ImageError):
    """A mask file cannot be used; the message says why."""


def working_size(width: int, height: int, *, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most max_side; never enlarged."""
    if width < 1 or height < 1 or max_side < 1:
        raise ValueError(f"sizes must be positive, got {width}×{height} and {max_side}")
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    scale = max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_nearest(mask: np.ndarray, *, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask (pixel centres map to pixel centres)."""
    src_h, src_w = mask.shape
    if (src_w, src_h) == (width, height):
        return mask.astype(bool, copy=True)
    rows = np.minimum(((np.arange(height) + 0.5) * src_h / height).astype(np.intp), src_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * src_w / width).astype(np.intp), src_w - 1)
    return mask.astype(bool)[rows[:, None], cols[None, :]]


def pixel_sha256(mask: np.ndarray) -> str:
    """sha256 of the mask's size and its packed pixels (row-major, 8 pixels a byte).

    Two masks hash alike exactly when they have the same size and the same foreground.
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    height, width = mask.shape
    digest = hashlib.sha256(f"{width}x{height}:".encode())
    digest.update(np.packbits(mask, axis=None).tobytes())
    return digest.hexdigest()


def _as_bool(mask: np.ndarray) -> np.ndarray:
    """A 2-D mask as booleans; a numeric mask must hold 0/1 or 0/255."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D, got shape {mask.shape}")
    if mask.dtype != bool:
        values = set(np.unique(mask).tolist())
        if not (values <= {0, 1} or values <= {0, 255}):
            raise ValueError(f"a mask holds two values (0/1 or 0/255), got {sorted(values)[:5]}")
    return np.ascontiguousarray(mask != 0)


def mask_to_png(mask: np.ndarray) -> bytes:
    """A 1-bit greyscale PNG (0 = background, 1 = infection), the same bytes for the same mask.

    This is how masks are stored: drawn, imported and predicted alike.
    """
    image = Image.fromarray(_as_bool(mask))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def mask_to_png_0_255(mask: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG with 0 = background and 255 = infection, as the published
    QaTa-COV19 masks are: what exports and mask files on disk use. No metadata, so the same
    mask always gives the same bytes."""
    image = Image.fromarray(np.where(_as_bool(mask), 255, 0).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def mask_from_png(data: bytes, *, max_pixels: int = 64 * 1024 * 1024) -> np.ndarray:
    """The boolean mask in a stored mask PNG (written by mask_to_png or any binary PNG)."""
    return binary_mask(data, max_pixels=max_pixels)


def _values_text(values: np.ndarray) -> str:
    shown = ", ".join(str(int(v)) for v in values[:8])
    more = f" … ({len(values)} distinct values)" if len(values) > 8 else ""
    return shown + more


def binary_mask(
    data: bytes, *, max_pixels: int, expected_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode a mask file into a boolean array, or raise MaskError.

    Accepts 1-bit masks and 8/16-bit masks whose values are {0, 1} or {0, 255} (or {0, 65535}).
    Anything else, such as a JPEG-compressed mask with grey edges, is refused with the values
    found. expected_size is the image's (width, height); a mask must match it exactly.
    """
    if not data:
        raise MaskError("mask file is empty (0 bytes)")
    try:
        image, _orientation = open_pillow(data, max_pixels=max_pixels, kind="mask")
    except MaskError:
        raise
    except ImageError as exc:
        raise MaskError(str(exc)) from exc
    if expected_size is not None and image.size != tuple(expected_size):
        raise MaskError(
            f"mask is {image.size[0]}×{image.size[1]} but the image is "
            f"{expected_size[0]}×{expected_size[1]}"
        )
    if image.mode == "1":
        return np.asarray(image, dtype=bool)
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.int64)
        highs = (1, 255, 65535)
    else:
        # Palette, grey+alpha and colour masks: judged by the grey level a viewer shows.
        values = np.asarray(image.convert("L"))
        highs = (1, 255)
    found = np.unique(values)
    for high in highs:
        if np.isin(found, (0, high)).all():
            return values == high
    raise MaskError(
        f"mask is not binary: values {_values_text(found)} (expected 0 and 255, or 0 and 1)"
    )


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _open_png(data: bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except OSError as exc:
        raise ValueError(f"not a readable PNG: {exc}") from exc
    if img.format != "PNG":
        raise ValueError(f"expected a PNG, got {img.format}")
    return img


def encode_probability_png(prob: np.ndarray) -> bytes:
    """An (H, W) probability map in [0, 1] as an 8-bit greyscale PNG (value = round(255 p))."""
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2:
        raise ValueError(f"a probability map is (H, W), got shape {prob.shape}")
    if not np.isfinite(prob).all() or prob.min() < -1e-6 or prob.max() > 1 + 1e-6:
        raise ValueError("probabilities must be finite and lie in [0, 1]")
    quantised = np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)
    return _png_bytes(Image.fromarray(quantised))  # mode L


def decode_probability_png(data: bytes) -> np.ndarray:
    img = _open_png(data)
    if img.mode != "L":
        raise ValueError(f"a probability PNG is 8-bit greyscale, got mode {img.mode}")
    return np.asarray(img, dtype=np.float32) / 255.0
