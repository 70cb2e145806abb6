"""Export cases in the QaTa-COV19 layout (cxrio.qata): Images/<name>.png and
Ground-truths/mask_<name>.png, in Train Set/ and Test Set/ when the stored split is kept.

The image is the stored 8-bit display PNG, byte for byte. The mask is the accepted mask,
stored at the working resolution, brought back to the image's full size by nearest-neighbour
upscaling and written as an 8-bit PNG with values 0 and 255 (cxrio.masks.mask_to_png_0_255),
as in the published dataset. `import_cxr` reads this layout back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from annotation.models import Radiograph
from annotation.storage import blob_read
from cxrio import qata
from cxrio.masks import mask_from_png, resize_nearest

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


def case_paths(name: str, *, split: str) -> CasePaths:
    """Where a case goes in the export; split is "train", "test" or "" (no split folder)."""
    image, mask = qata.case_paths(name, split=split)
    return CasePaths(name=name, image=image, mask=mask)


def split_of(radiograph: Radiograph, *, split_mode: str) -> str:
    """The split folder a case is exported into: its stored split, or none."""
    return radiograph.split if split_mode == "stored" else ""


def display_png(radiograph: Radiograph) -> bytes:
    return blob_read(radiograph.display.name)


def full_size_mask(radiograph: Radiograph, mask_png_path: str | None) -> np.ndarray:
    """The accepted mask at the image's full size (all False for a control without one)."""
    if mask_png_path is None:
        return np.zeros((radiograph.height, radiograph.width), dtype=bool)
    work = mask_from_png(blob_read(mask_png_path))
    return resize_nearest(work, width=radiograph.width, height=radiograph.height)
