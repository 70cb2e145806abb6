"""What every decoder shares: the formats, the decoded image, the error a user can cause and
the pixel-limit and display-scaling rules. Imported by images (Pillow) and dicom (pydicom)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG, JPEG, DICOM = "png", "jpeg", "dicom"
EXTENSIONS = {PNG: "png", JPEG: "jpg", DICOM: "dcm"}
BOMB_HINT = " (a decompression bomb or not a radiograph; see IMPORT_MAX_PIXELS)"


class ImageError(ValueError):
    """A file cannot be used as a radiograph; the message says why, for the person importing."""


@dataclass
class DecodedImage:
    pixels: np.ndarray  # 2-D greyscale values as stored (after the DICOM modality LUT)
    display: np.ndarray  # 2-D uint8, what a reader sees: windowed, MONOCHROME2, upright
    source_format: str  # png | jpeg | dicom
    bit_depth: int
    metadata: dict[str, Any] = field(default_factory=dict)  # non-identifying facts only
    # Kept only so the caller can hash it; never stored.
    patient_id: str | None = None

    @property
    def width(self) -> int:
        return int(self.display.shape[1])

    @property
    def height(self) -> int:
        return int(self.display.shape[0])


def sniff_format(data: bytes) -> str | None:
    """png, jpeg or dicom by content (never by file name), or None."""
    if data.startswith(PNG_SIGNATURE):
        return PNG
    if data.startswith(JPEG_SIGNATURE):
        return JPEG
    if len(data) >= 132 and data[128:132] == b"DICM":
        return DICOM
    # Files without the Part-10 preamble start with a group 0002 or 0008 tag, little endian.
    if len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00") and data[3:4] == b"\x00":
        return DICOM
    return None


def check_pixel_limit(width: int, height: int, *, max_pixels: int, frames: int = 1) -> None:
    pixels = int(width) * int(height) * max(1, int(frames))
    if pixels > max_pixels:
        raise ImageError(
            f"image is {width}×{height}{f'×{frames} frames' if frames > 1 else ''} = "
            f"{pixels:,} pixels, over the limit of {max_pixels:,} pixels{BOMB_HINT}"
        )


def to_display(values: np.ndarray, *, low: float, high: float) -> np.ndarray:
    """Linear map of [low, high] to 0..255, clipped."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
