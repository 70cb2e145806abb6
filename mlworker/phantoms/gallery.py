"""A contact sheet of phantom cases for a person to look at."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mlworker.phantoms._raster import outline
from mlworker.phantoms.cases import PhantomCase

# Okabe-Ito colours, told apart with every common colour-vision deficiency.
TRUE_COLOUR = (230, 159, 0)  # orange
MANUAL_COLOUR = (86, 180, 233)  # sky blue
GAP = 4
CAPTION = 30
HEADER = 24
_FONT_SIZE = 11


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=_FONT_SIZE)


def _tile(case: PhantomCase) -> np.ndarray:
    rgb = np.repeat(case.image[:, :, None], 3, axis=2)
    if case.has_manual:
        rgb[outline(case.manual_mask)] = MANUAL_COLOUR
    rgb[outline(case.true_mask)] = TRUE_COLOUR
    return rgb


def _caption(case: PhantomCase) -> tuple[str, str]:
    what = case.label if case.finding is None else f"{case.label} / {case.finding}"
    if case.label != "covid":
        second = "control: no infection"
    elif case.has_manual:
        second = f"manual Dice {case.manual_dice:.2f}"
    else:
        second = f"no manual mask ({case.manual_dice:.2f})"
    return f"{case.name}  {what}", second


def write_gallery(cases: Sequence[PhantomCase], path: str | Path, *, columns: int = 6) -> Path:
    """Write a PNG grid of `cases`: each image with the true mask outlined in orange and, where
    the case ships one, the manual mask in sky blue, captioned with label, finding and the
    manual-vs-true Dice. Tiles are shown at the images' own pixel size."""
    if not cases:
        raise ValueError("no cases to show")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    size = cases[0].size
    if any(c.size != size for c in cases):
        raise ValueError("all cases in a gallery must have the same size")
    columns = min(columns, len(cases))
    rows = math.ceil(len(cases) / columns)
    width = columns * size + (columns + 1) * GAP
    height = HEADER + rows * (size + CAPTION + GAP) + GAP
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = _font()
    draw.text((GAP, 6), "true mask", fill=TRUE_COLOUR, font=font)
    draw.text((GAP + 70, 6), "manual mask", fill=MANUAL_COLOUR, font=font)
    for i, case in enumerate(cases):
        left = GAP + (i % columns) * (size + GAP)
        top = HEADER + (i // columns) * (size + CAPTION + GAP)
        sheet.paste(Image.fromarray(_tile(case), "RGB"), (left, top))
        # Captions are drawn on their own strip so a long one is cut at the tile's edge.
        strip = Image.new("RGB", (size, CAPTION), (255, 255, 255))
        pen = ImageDraw.Draw(strip)
        first, second = _caption(case)
        pen.text((0, 2), first, fill=(0, 0, 0), font=font)
        pen.text((0, 15), second, fill=(60, 60, 60), font=font)
        sheet.paste(strip, (left, top + size))
    path = Path(path)
    sheet.save(path, format="PNG", optimize=False, compress_level=6)
    return path
