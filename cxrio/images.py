"""Decode chest X-ray files (PNG, JPEG, DICOM) into pixel arrays and an 8-bit display image.

Pure imaging code: no Django, no database. Every failure a user can cause with a bad file
raises ImageError with a message that says what is wrong with the file, never a traceback.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from cxrio.pixels import (  # noqa: F401 - callers import the decoding API from here
    BOMB_HINT,
    DICOM,
    EXTENSIONS,
    JPEG,
    PNG,
    DecodedImage,
    ImageError,
    check_pixel_limit,
    sniff_format,
    to_display,
)

_PILLOW_LOCK = threading.Lock()
_EXIF_ORIENTATION = 0x0112


@contextmanager
def pillow_limits(max_pixels: int) -> Iterator[None]:
    """Pillow's limits for one decode, never its global defaults.

    Pillow keeps them in module globals, so they are set under a lock and restored after.
    """
    with _PILLOW_LOCK:
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS = max_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not grey rows
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def open_pillow(data: bytes, *, max_pixels: int, kind: str) -> tuple[Image.Image, int]:
    """Open and fully load a PNG or JPEG under the pixel limit, upright per EXIF orientation.

    Returns the image and the EXIF orientation that was applied (1 when none).
    """
    with pillow_limits(max_pixels):
        try:
            image = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
            check_pixel_limit(*image.size, max_pixels=max_pixels)
            image.load()
            orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            # Readers must see the radiograph as the camera meant it (EXIF orientation 2..8).
            upright = ImageOps.exif_transpose(image)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow refused it from the header alone, before allocating anything.
            raise ImageError(
                f"{kind} is over the limit of {max_pixels:,} pixels{BOMB_HINT}"
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(f"{kind} header cannot be read; the file is damaged") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{kind} data is truncated or corrupt ({exc})") from exc
    return upright, orientation


def _png_bit_depth(data: bytes) -> int:
    # IHDR is always the first chunk; byte 24 is its bit depth (1, 2, 4, 8 or 16).
    return int(data[24]) if len(data) > 24 else 8


# Mean spread between the colour channels (0–255) above which an image is really in colour;
# a greyscale image saved as RGB (or JPEG's chroma noise on one) stays far below it.
COLOUR_SPREAD = 12.0


def is_colourful(image: Image.Image) -> bool:
    """Whether an RGB(A) image carries colour, judged on a sample of its pixels."""
    rgb = np.asarray(image.convert("RGB"))
    step = max(1, max(rgb.shape[:2]) // 512)
    sample = rgb[::step, ::step].astype(np.int16)
    return float((sample.max(axis=2) - sample.min(axis=2)).mean()) > COLOUR_SPREAD


def _to_grey(image: Image.Image, metadata: dict[str, Any]) -> np.ndarray:
    """Greyscale values of a Pillow image, keeping 16-bit precision where the file has it."""
    mode = image.mode
    metadata["pil_mode"] = mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image).astype(np.uint16)
    if mode in ("I", "F"):
        return np.asarray(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels carry no signal: composite on black, like an unexposed detector.
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
        metadata["alpha"] = "composited on black"
    if image.mode in ("RGB", "RGBA") and is_colourful(image):
        metadata["colour"] = True  # a photograph or a coloured figure, not a radiograph
    if image.mode != "L":
        image = image.convert("L")  # ITU-R 601-2 luma for colour files
    return np.asarray(image)


def minmax_display(values: np.ndarray, metadata: dict[str, Any]) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    metadata["window"] = {"method": "min-max", "low": low, "high": high}
    return to_display(values, low=low, high=high)


def decode_raster(data: bytes, *, source_format: str, max_pixels: int) -> DecodedImage:
    kind = source_format.upper()
    image, orientation = open_pillow(data, max_pixels=max_pixels, kind=kind)
    metadata: dict[str, Any] = {"format": source_format}
    if orientation != 1:
        metadata["exif_orientation"] = orientation
    bit_depth = _png_bit_depth(data) if source_format == PNG else 8
    pixels = _to_grey(image, metadata)
    display = pixels if pixels.dtype == np.uint8 else minmax_display(pixels, metadata)
    metadata["bits_stored"] = bit_depth
    return DecodedImage(
        pixels=pixels,
        display=np.ascontiguousarray(display),
        source_format=source_format,
        bit_depth=bit_depth,
        metadata=metadata,
    )


def decode_image(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Decode a whole file held in memory, or raise ImageError saying why it cannot be used."""
    if not data:
        raise ImageError("file is empty (0 bytes)")
    source_format = sniff_format(data)
    if source_format is None:
        raise ImageError("content is not a PNG, JPEG or DICOM image")
    if source_format == DICOM:
        from cxrio.dicom import decode_dicom  # pydicom is only loaded when needed

        return decode_dicom(data, max_pixels=max_pixels)
    return decode_raster(data, source_format=source_format, max_pixels=max_pixels)


def encode_png(pixels: np.ndarray) -> bytes:
    """A greyscale 8-bit PNG, byte-for-byte the same for the same pixels."""
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 array, got {pixels.dtype} {pixels.shape}")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
