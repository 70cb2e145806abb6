"""The QaTa-COV19 folder layout, written once: what the import reads, the export and the
phantom generator write, and training reads.

    ROOT/Train Set/Images/<name>.png
    ROOT/Train Set/Ground-truths/mask_<name>.png   (absent for an image without a mask)
    ROOT/Test Set/...                              (v2; v1 has Images/ + Ground-truths/ at ROOT)
    ROOT/labels.csv                                name,label[,finding,patient_id,split]

Copies of the dataset also spell the folders `images/` + `masks/`. In labels.csv, `name` is the
image file name with or without its extension. No Django, no decoding: names and text only.
"""

from __future__ import annotations

import csv
import io
from pathlib import PurePosixPath

SPLIT_FOLDERS = {"train": "Train Set", "test": "Test Set"}
IMAGES, GROUND_TRUTHS = "Images", "Ground-truths"
# (images folder, masks folder) in the order a reader tries them.
FOLDER_PAIRS = ((IMAGES, GROUND_TRUTHS), ("images", "masks"))
# Folder names, lower-cased, that hold masks in the copies seen in the wild.
MASK_FOLDERS = frozenset({"ground-truths", "ground_truths", "groundtruths", "masks"})
LABELS_FILE = "labels.csv"
# Phantom cohorts keep their exact masks here, for evaluation only; the import skips it.
HIDDEN_TRUTH = "hidden-truth"
LABEL_COLUMNS = ("name", "label", "finding", "patient_id", "split")
REQUIRED_COLUMNS = LABEL_COLUMNS[:2]
MASK_PREFIX = "mask_"


class LabelsError(ValueError):
    """A labels.csv that cannot be trusted; the message says where and why."""


def mask_name(image_name: str) -> str:
    """The mask file name of an image file name: mask_<image file name>."""
    return f"{MASK_PREFIX}{image_name}"


def png_mask_name(image_name: str) -> str:
    """The mask file name when the mask is a PNG whatever the image is (x.jpg -> mask_x.png)."""
    return mask_name(f"{PurePosixPath(image_name).stem}.png")


def mask_names(image_name: str) -> tuple[str, ...]:
    """The mask file names an image may have, the released naming first."""
    names = (mask_name(image_name), png_mask_name(image_name))
    return names[:1] if names[0] == names[1] else names


def image_name_of(mask_file_name: str) -> str | None:
    """The image file name a mask file name points to, or None when it lacks the prefix."""
    if mask_file_name.startswith(MASK_PREFIX):
        return mask_file_name[len(MASK_PREFIX) :]
    return None


def split_of_folder(folder_name: str) -> str:
    """ "train" / "test" for a split folder name (any case), else ""."""
    lowered = folder_name.lower()
    return next((s for s, f in SPLIT_FOLDERS.items() if f.lower() == lowered), "")


def case_paths(image_name: str, *, split: str = "") -> tuple[str, str]:
    """(image path, mask path), relative to ROOT, of a case in `split` ("" = no split folder)."""
    prefix = f"{SPLIT_FOLDERS[split]}/" if split else ""
    return f"{prefix}{IMAGES}/{image_name}", f"{prefix}{GROUND_TRUTHS}/{mask_name(image_name)}"


def labels_columns_text() -> str:
    """The columns as people read them: name,label[,finding,patient_id,split]."""
    return f"{','.join(REQUIRED_COLUMNS)}[,{','.join(LABEL_COLUMNS[len(REQUIRED_COLUMNS) :])}]"


def read_labels(
    text: str, *, required: tuple[str, ...] = REQUIRED_COLUMNS, strict: bool = False
) -> dict[str, dict[str, str]]:
    """name -> row of labels.csv text, column names lower-cased, names and values stripped.

    Raises LabelsError for a missing `required` column, with `strict` for a column not in
    LABEL_COLUMNS, and for an empty or repeated name.
    """
    reader = csv.DictReader(io.StringIO(text))
    columns = [(c or "").strip().lower() for c in reader.fieldnames or []]
    if not set(required) <= set(columns):
        raise LabelsError(f"needs the columns {labels_columns_text()}")
    unknown = sorted(set(columns) - set(LABEL_COLUMNS))
    if strict and unknown:
        raise LabelsError(f"unknown columns {unknown}; expected {', '.join(LABEL_COLUMNS)}")
    rows: dict[str, dict[str, str]] = {}
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        name = row.get("name", "")
        if not name:
            raise LabelsError(f"line {number}: empty name")
        if name in rows:
            raise LabelsError(f"line {number}: {name} is listed twice")
        rows[name] = row
    return rows


def labels_text(rows: list[dict[str, str]]) -> str:
    """labels.csv text with every column, in LABEL_COLUMNS order, one row per case."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LABEL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def labels_row(rows: dict[str, dict[str, str]], image_name: str) -> dict[str, str]:
    """The labels.csv row of an image: by file name, else by stem; {} when not listed."""
    return rows.get(image_name) or rows.get(PurePosixPath(image_name).stem) or {}
