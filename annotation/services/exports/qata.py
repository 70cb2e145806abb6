"""The QaTa-COV19 layout: Images/<name>.png and Ground-truths/mask_<name>.png.

The image is the stored 8-bit display PNG, byte for byte. The mask is the accepted mask,
stored at the working resolution, brought back to the image's full size by nearest-neighbour
upscaling and written as an 8-bit PNG with values 0 and 255, as in the published dataset.
`import_cxr` reads this layout back (folder names, mask_ prefix, labels.csv, Train/Test Set).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from annotation.models import Radiograph, Split
from annotation.storage import blob_read
from cxrio.masks import mask_from_png, resize_nearest

SPLIT_FOLDERS = {Split.TRAIN: "Train Set", Split.TEST: "Test Set"}
IMAGES, MASKS = "Images", "Ground-truths"
_UNSAFE = re.compile(r"[\x00-\x1f/\\:*?\"<>|]")


@dataclass(frozen=True)
class CasePaths:
    name: str  # the exported image file name, e.g. covid_12.png
    image: str  # path inside the zip
    mask: str

    @property
    def mask_name(self) -> str:
        return PurePosixPath(self.mask).name


class Namer:
    """Export file names: the imported name with a .png suffix, unique within the export."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def name_for(self, radiograph: Radiograph) -> str:
        stem = PurePosixPath(_UNSAFE.sub("_", radiograph.name)).stem.lstrip(".") or "case"
        name = f"{stem}.png"
        if name.lower() in self._used:
            # Two imported files with one name (from different folders): keep both, told apart
            # by the start of their content hash.
            name = f"{stem}__{radiograph.sha256[:12]}.png"
        self._used.add(name.lower())
        return name


def case_paths(name: str, *, folder: str) -> CasePaths:
    prefix = f"{folder}/" if folder else ""
    return CasePaths(
        name=name, image=f"{prefix}{IMAGES}/{name}", mask=f"{prefix}{MASKS}/mask_{name}"
    )


def split_folder(radiograph: Radiograph, *, split_mode: str) -> str:
    if split_mode != "stored":
        return ""
    return SPLIT_FOLDERS[radiograph.split]


def display_png(radiograph: Radiograph) -> bytes:
    return blob_read(radiograph.display.name)


def full_size_mask(radiograph: Radiograph, mask_png_path: str | None) -> np.ndarray:
    """The accepted mask at the image's full size (all False for a control without one)."""
    if mask_png_path is None:
        return np.zeros((radiograph.height, radiograph.width), dtype=bool)
    work = mask_from_png(blob_read(mask_png_path))
    return resize_nearest(work, width=radiograph.width, height=radiograph.height)


def mask_png_0_255(mask: np.ndarray) -> bytes:
    """8-bit greyscale PNG, 0 = background and 255 = infection."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
