"""Reading QaTa-COV19-layout folders and splitting cases into folds by patient.

Layout (cxrio.qata, the released QaTa-COV19 naming):

    FOLDER/Images/<name>.png
    FOLDER/Ground-truths/mask_<name>.png      (0/255; absent for unlabelled images)
    FOLDER/labels.csv                         (optional: name,label,finding,patient_id,split)

FOLDER is one split folder of a QaTa-COV19 v2 tree (ROOT/Train Set, ROOT/Test Set); a
labels.csv at ROOT is honoured too. In labels.csv, `name` is the image file name or its
stem, and any label other than COVID-19 marks a control (QaTa-COV19's control group is
normal and non-COVID radiographs): controls count as labelled, with empty masks.
`images/` + `masks/` (as some copies of the dataset use) are read the same way.
No Keras here: this module is cheap to import.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cxrio import qata
from cxrio.masks import binary_mask

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
COVID_LABELS = {"covid", "covid-19", "covid19"}
# A QaTa-COV19 mask file is small; a bigger one is not a mask.
MASK_MAX_PIXELS = 64 * 1024 * 1024


class DataError(ValueError):
    """A folder, file or split request that cannot be used; the message says why."""


@dataclass
class CaseSet:
    """Radiographs at one working resolution, with masks where known.

    `masks[i]` is all False where `labelled[i]` is False (no mask file, not a control).
    Controls are labelled: their mask is empty by definition.
    """

    names: list[str]
    images: np.ndarray  # uint8 (N, H, W)
    masks: np.ndarray  # bool (N, H, W)
    labelled: np.ndarray  # bool (N,)
    labels: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def is_control(self) -> np.ndarray:
        return np.array([is_control_label(label) for label in self.labels], dtype=bool)

    def subset(self, idx: Sequence[int] | np.ndarray) -> CaseSet:
        idx = np.asarray(idx, dtype=np.int64)

        def pick(values: list[str]) -> list[str]:
            return [values[i] for i in idx]

        return CaseSet(
            names=pick(self.names),
            images=self.images[idx],
            masks=self.masks[idx],
            labelled=self.labelled[idx],
            labels=pick(self.labels),
            findings=pick(self.findings),
            patients=pick(self.patients),
            splits=pick(self.splits),
        )


def is_control_label(label: str) -> bool:
    """Any labels.csv label but COVID-19 (normal, other, control, ...); empty is unknown."""
    return bool(label) and label.lower() not in COVID_LABELS


def patient_of(name: str) -> str:
    """The patient a file name belongs to: its BIMCV `sub-S…` part, else the name itself.

    Lower-cased, because the dataset spells the same subjects both `sub-S` and `sub-s`;
    merging them can only keep a patient's images more together, never split them.
    """
    match = re.match(r"(sub-[A-Za-z0-9]+)_", name)
    return match.group(1).lower() if match else Path(name).stem


def _as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or min(hw) < 1:
        raise DataError(f"size must be a positive int or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An 8-bit greyscale radiograph at `size` (H, W), bilinear."""
    with Image.open(path) as img:
        if img.mode in ("I", "I;16", "I;16B", "F"):
            # More than 8 bits: stretch the stored range onto 0..255.
            arr = np.asarray(img, dtype=np.float64)
            lo, hi = arr.min(), arr.max()
            arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
            img = Image.fromarray(np.round(arr).astype(np.uint8))
        elif img.mode != "L":
            img = img.convert("L")
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A binary mask at `size` (H, W), nearest; 0/255 and 0/1 files both read right."""
    binary = binary_mask(path.read_bytes(), max_pixels=MASK_MAX_PIXELS)
    if binary.shape != size:
        resized = Image.fromarray(binary.astype(np.uint8) * 255).resize(
            (size[1], size[0]), Image.Resampling.NEAREST
        )
        binary = np.asarray(resized) > 127
    return binary


def _find_layout(root: Path) -> tuple[Path, Path]:
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    for images, masks in qata.FOLDER_PAIRS:
        if (root / images).is_dir():
            return root / images, root / masks
    splits = [root / name for name in qata.SPLIT_FOLDERS.values() if (root / name).is_dir()]
    if splits:
        raise DataError(
            f"{root} is a QaTa-COV19 v2 root: pass one split folder ({' or '.join(map(str, splits))})"
        )
    raise DataError(
        f"{root} has no {qata.IMAGES}/ folder (QaTa-COV19 layout: {qata.IMAGES}/<name>.png, "
        f"{qata.GROUND_TRUTHS}/{qata.mask_name('<name>.png')})"
    )


def _read_labels_csv(path: Path) -> dict[str, dict[str, str]]:
    try:
        return qata.read_labels(
            path.read_text(encoding="utf-8-sig"), required=("name",), strict=True
        )
    except qata.LabelsError as exc:
        raise DataError(f"{path}: {exc}") from exc


def load_qata_folder(
    path: str | Path,
    *,
    size: int | tuple[int, int],
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CaseSet:
    """Reads a QaTa-COV19-layout folder at working resolution `size`.

    `names` (image file names) restricts and orders what is read; `progress(done, total)`
    is called after each image.
    """
    root = Path(path)
    hw = _as_hw(size)
    image_dir, mask_dir = _find_layout(root)
    available = sorted(
        p.name for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not available:
        raise DataError(f"no images in {image_dir}")
    if names is not None:
        present = set(available)
        missing = [n for n in names if n not in present]
        if missing:
            raise DataError(f"{len(missing)} requested images not in {image_dir}: {missing[:5]}")
        available = list(names)
    rows: dict[str, dict[str, str]] = {}
    if (root / qata.LABELS_FILE).is_file():
        rows = _read_labels_csv(root / qata.LABELS_FILE)
        # This folder's own labels.csv describes it: a name it lacks means a wrong folder.
        files = {p.name for p in image_dir.iterdir()} | {p.stem for p in image_dir.iterdir()}
        unknown = sorted(set(rows) - files)
        if unknown:
            raise DataError(f"{qata.LABELS_FILE} lists images not in {image_dir}: {unknown[:5]}")
    elif qata.split_of_folder(root.name) and (root.parent / qata.LABELS_FILE).is_file():
        rows = _read_labels_csv(root.parent / qata.LABELS_FILE)  # covers every split folder

    n = len(available)
    images = np.zeros((n, *hw), np.uint8)
    masks = np.zeros((n, *hw), bool)
    labelled = np.zeros(n, bool)
    labels, findings, patients, splits = [], [], [], []
    for i, name in enumerate(available):
        row = qata.labels_row(rows, name)
        label = row.get("label", "").lower()
        try:
            images[i] = read_image(image_dir / name, hw)
            mask_path = mask_file(mask_dir, name)
            if mask_path is not None:
                masks[i] = read_mask(mask_path, hw)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {name}: {exc}") from exc
        labelled[i] = mask_path is not None or is_control_label(label)
        labels.append(label)
        findings.append(row.get("finding", ""))
        patients.append(row.get("patient_id") or patient_of(name))
        splits.append(row.get("split", "").lower())
        if progress is not None:
            progress(i + 1, n)
    return CaseSet(available, images, masks, labelled, labels, findings, patients, splits)


def mask_file(mask_dir: Path, name: str) -> Path | None:
    """The mask of image `name` in `mask_dir`, or None; a .png mask beside a .jpg image too."""
    for candidate in qata.mask_names(name):
        if (mask_dir / candidate).is_file():
            return mask_dir / candidate
    return None


def _check_split_inputs(labels: Sequence, groups: Sequence, k: int) -> tuple[np.ndarray, ...]:
    labels, groups = np.asarray(labels), np.asarray(groups)
    if labels.shape != groups.shape or labels.ndim != 1:
        raise DataError(f"labels {labels.shape} and groups {groups.shape} must be equal 1-D")
    if k < 2:
        raise DataError(f"need at least 2 folds, got {k}")
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise DataError(f"{n_groups} patients cannot fill {k} folds")
    return labels, groups


def kfold_splits(
    labels: Sequence, groups: Sequence, k: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, validation) index pairs, stratified by label, each patient in one fold.

    Stratification is best effort: a label with fewer patients than folds cannot be in
    every fold (scikit-learn's warning about it is silenced; grouping always holds).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = _check_split_inputs(labels, groups, k)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds = list(splitter.split(np.zeros(len(labels)), labels, groups))
    return [(np.sort(train), np.sort(val)) for train, val in folds]


def train_val_split(
    labels: Sequence, groups: Sequence, *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One stratified, patient-grouped hold-out of about `val_fraction` of the cases."""
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    k = max(2, round(1 / val_fraction))
    return kfold_splits(labels, groups, k, seed)[0]
