"""Find the cases in folders and zip archives: images, their masks, labels and splits.

No Django and no decoding here: this only lists files (zip members are read lazily, later) and
pairs them. Understood layouts:
- a flat folder or zip of PNG / JPEG / DICOM files;
- the QaTa-COV19 layouts, v1 and v2 (the split folder gives the split), with an optional
  labels.csv at the root (see cxrio.qata, which holds the layout's names and rules);
- a mask named `mask_<image file name>` beside its image in one folder.
Never imported: documents (txt, csv, json …), hidden and system files, and `hidden-truth/`,
where the phantom generator keeps the exact masks for evaluation.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cxrio import qata

# Files that are plainly not radiographs: listed as skipped, not rejected.
DOCUMENT_SUFFIXES = frozenset(
    {
        ".txt",
        ".md",
        ".csv",
        ".json",
        ".jsonl",
        ".xml",
        ".html",
        ".pdf",
        ".yaml",
        ".yml",
        ".log",
        ".py",
    }
)
_LIMIT = " (IMPORT_MAX_FILE_BYTES)"
_NOTHING = "; nothing under this PATH was imported"
# Checksum lists (as in our own exports) are documents too, whatever their suffix.
SYSTEM_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx", "sha256sums", "md5sums"})
SKIPPED_FOLDERS = frozenset({qata.HIDDEN_TRUTH})


class ImportInputError(ValueError):
    """The import cannot start (a PATH is missing or unreadable as a whole)."""


@dataclass(frozen=True)
class Source:
    """One input file, read only when its case is processed."""

    where: str  # for people: "QaTa.zip:Train Set/Images/x.png" or "folder/x.png"
    size: int
    opener: Callable[[], io.BufferedIOBase] = field(repr=False)

    @property
    def name(self) -> str:
        return PurePosixPath(self.where.rsplit(":", 1)[-1]).name

    def read(self, *, max_bytes: int) -> bytes:
        """All bytes, refusing files over max_bytes without reading past the limit."""
        if self.size > max_bytes:
            raise ValueError(
                f"file is {self.size:,} bytes, over the limit of {max_bytes:,} bytes{_LIMIT}"
            )
        with self.opener() as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ValueError(f"file is over the limit of {max_bytes:,} bytes{_LIMIT}")
        return data


@dataclass
class Case:
    image: Source
    mask: Source | None = None
    split: str = ""
    label: str | None = None
    finding: str = ""
    patient_id: str | None = None


@dataclass
class Layout:
    cases: list[Case] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Entry:
    rel: PurePosixPath
    source: Source


def _zip_entries(path: Path, stack: ExitStack, layout: Layout) -> list[_Entry]:
    try:
        archive = stack.enter_context(zipfile.ZipFile(path))
    except (zipfile.BadZipFile, OSError) as exc:
        layout.problems.append((path.name, f"not a readable zip archive ({exc})"))
        return []
    entries = []
    for info in archive.infolist():
        raw = info.filename
        where = f"{path.name}:{raw}"
        if info.is_dir():
            continue
        parts = raw.replace("\\", "/").split("/")
        if raw.startswith(("/", "\\")) or (len(raw) > 1 and raw[1] == ":") or ".." in parts:
            layout.problems.append((where, "zip entry escapes the target folder; not read"))
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            layout.problems.append((where, "zip entry is a symbolic link; not read"))
            continue
        if info.flag_bits & 0x1:
            layout.problems.append((where, "zip entry is encrypted"))
            continue
        rel = PurePosixPath(*[p for p in parts if p not in ("", ".")])

        def opener(info: zipfile.ZipInfo = info) -> io.BufferedIOBase:
            return archive.open(info)

        entries.append(_Entry(rel, Source(f"{path.name}:{rel}", info.file_size, opener)))
    return entries


def _folder_entries(path: Path, layout: Layout) -> list[_Entry]:
    files = []
    for folder, dirs, names in os.walk(path):  # symbolic links to folders are not followed
        dirs.sort()
        files.extend(Path(folder) / name for name in names)
    entries = []
    for file in sorted(files):
        rel = PurePosixPath(file.relative_to(path).as_posix())
        where = f"{path.name}/{rel}"
        if file.is_symlink():
            layout.problems.append((where, "symbolic link; not followed"))
            continue
        if not file.is_file():
            continue

        def opener(file: Path = file) -> io.BufferedIOBase:
            return file.open("rb")

        entries.append(_Entry(rel, Source(where, file.stat().st_size, opener)))
    return entries


def _split_of(rel: PurePosixPath) -> str:
    for part in rel.parts[:-1]:
        if split := qata.split_of_folder(part):
            return split
    return ""


def _read_labels(entry: _Entry, layout: Layout) -> dict[str, dict[str, str]] | None:
    """name -> row, or None (with a problem) when the file cannot be trusted."""
    where = entry.source.where
    try:
        text = entry.source.read(max_bytes=64 * 1024 * 1024).decode("utf-8-sig")
    except (ValueError, OSError) as exc:
        layout.problems.append((where, f"cannot be read as UTF-8 text ({exc}){_NOTHING}"))
        return None
    try:
        return qata.read_labels(text)
    except qata.LabelsError as exc:
        layout.problems.append((where, f"{exc}{_NOTHING}"))
        return None


def _pair(entries: list[_Entry], layout: Layout) -> list[tuple[_Entry, _Entry | None]]:
    """(image, mask) pairs; masks without an image become problems."""
    images, masks = [], []
    all_paths = {e.rel for e in entries}
    for entry in entries:
        is_mask = entry.rel.parent.name.lower() in qata.MASK_FOLDERS
        if not is_mask and (twin := qata.image_name_of(entry.rel.name)):
            # mask_<name> beside <name> in one folder
            is_mask = entry.rel.with_name(twin) in all_paths
        (masks if is_mask else images).append(entry)

    by_dir_name: dict[tuple[PurePosixPath, str], _Entry] = {}
    by_grand_name: dict[tuple[PurePosixPath, str], list[_Entry]] = defaultdict(list)
    for image in images:
        by_dir_name[(image.rel.parent, image.rel.name)] = image
        by_grand_name[(image.rel.parent.parent, image.rel.name)].append(image)
        if image.rel.stem != image.rel.name:
            by_grand_name[(image.rel.parent.parent, image.rel.stem)].append(image)

    mask_of: dict[PurePosixPath, _Entry] = {}
    for mask in masks:
        name = mask.rel.name
        wanted = qata.image_name_of(name) or name
        folder = mask.rel.parent
        if folder.name.lower() in qata.MASK_FOLDERS:
            found = by_grand_name.get((folder.parent, wanted)) or by_grand_name.get(
                (folder.parent, PurePosixPath(wanted).stem), []
            )
            # Prefer the Images/ folder beside Ground-truths/ when several folders match.
            preferred = [i for i in found if i.rel.parent.name.lower() == "images"] or found
            image = preferred[0] if len(preferred) == 1 else None
            looked = folder.parent / qata.IMAGES / wanted
        else:
            image = by_dir_name.get((folder, wanted))
            looked = folder / wanted
        if image is None:
            layout.problems.append(
                (mask.source.where, f"mask has no matching image (looked for {looked})")
            )
        elif image.rel in mask_of:
            layout.problems.append(
                (mask.source.where, f"a second mask for {image.rel}; only one is imported")
            )
        else:
            mask_of[image.rel] = mask
    return [(image, mask_of.get(image.rel)) for image in images]


def _is_system(rel: PurePosixPath) -> bool:
    return any(p.startswith(".") or p.lower() in SYSTEM_NAMES for p in rel.parts)


def _root_layout(entries: list[_Entry], layout: Layout) -> None:
    if not entries:
        return
    tops = {e.rel.parts[0] for e in entries if len(e.rel.parts) > 1}
    label_paths = {PurePosixPath(qata.LABELS_FILE)}
    if len(tops) == 1 and all(len(e.rel.parts) > 1 for e in entries):
        label_paths.add(PurePosixPath(next(iter(tops))) / qata.LABELS_FILE)
    labels: dict[str, dict[str, str]] = {}
    candidates = []
    for entry in entries:
        if _is_system(entry.rel):
            continue
        if entry.rel in label_paths:
            found = _read_labels(entry, layout)
            if found is None:
                return  # a broken labels.csv would mislabel the whole root: import none of it
            labels.update(found)
        elif entry.rel.suffix.lower() in DOCUMENT_SUFFIXES or any(
            part.lower() in SKIPPED_FOLDERS for part in entry.rel.parts[:-1]
        ):
            layout.skipped.append(entry.source.where)
        elif entry.rel.suffix.lower() == ".zip":
            layout.problems.append(
                (entry.source.where, "archives inside folders are not opened; pass it as a PATH")
            )
        else:
            candidates.append(entry)
    for image, mask in _pair(candidates, layout):
        row = next(
            (
                labels[key]
                for key in (str(image.rel), image.rel.name, image.rel.stem)
                if key in labels
            ),
            {},
        )
        layout.cases.append(
            Case(
                image=image.source,
                mask=mask.source if mask else None,
                split=row.get("split", "").lower() or _split_of(image.rel),
                label=row.get("label", "").lower() or None,
                finding=row.get("finding", ""),
                patient_id=row.get("patient_id") or None,
            )
        )


def discover(paths: Iterable[str | Path], *, stack: ExitStack) -> Layout:
    """All cases under the given folders, zip archives and files, in a stable order.

    Zip archives stay open in `stack` until the caller is done reading their members.
    """
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ImportInputError(f"not found: {', '.join(missing)}")
    layout = Layout()
    for path in paths:
        if path.is_dir():
            entries = _folder_entries(path, layout)
        elif path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            entries = _zip_entries(path, stack, layout)
        else:

            def opener(path: Path = path) -> io.BufferedIOBase:
                return path.open("rb")

            source = Source(path.name, path.stat().st_size, opener)
            entries = [_Entry(PurePosixPath(path.name), source)]
        _root_layout(entries, layout)
    return layout
