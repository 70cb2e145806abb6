"""Content-addressed blobs on Django's default storage (local folder or S3).

A blob's path is derived from a sha256, so writing the same content twice is a no-op and two
rows may share one blob. Whoever creates a blob and then fails to reference it removes it again
(BlobWriter.discard_unreferenced); a blob that already existed is never touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import BinaryIO

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage

ORIGINALS, DISPLAY, MASKS = "originals", "display", "masks"
_CHUNK = 1 << 20


def file_sha256(handle: BinaryIO) -> tuple[str, int]:
    """sha256 and size of an open binary file, read in chunks from its start."""
    handle.seek(0)
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(chunk)
        size += len(chunk)
    handle.seek(0)
    return digest.hexdigest(), size


def content_path(kind: str, sha256: str, ext: str) -> str:
    """e.g. originals/ab/ab12….dcm: a two-character fan-out keeps folders small."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a hex sha256: {sha256!r}")
    return f"{kind}/{sha256[:2]}/{sha256}.{ext.lstrip('.')}"


def blob_write(path: str, data: bytes, *, storage: Storage | None = None) -> bool:
    """Write data at path unless it is already there. True when this call created the blob."""
    storage = storage or default_storage
    if storage.exists(path):
        return False
    saved = storage.save(path, ContentFile(data))
    if saved != path:
        # Another writer created the same content between exists() and save(); the storage
        # kept both under different names. The content is identical, so drop our copy.
        storage.delete(saved)
        return False
    return True


def blob_read(path: str, *, storage: Storage | None = None) -> bytes:
    storage = storage or default_storage
    with storage.open(path, "rb") as handle:
        return handle.read()


class BlobWriter:
    """Writes blobs and remembers which ones it created, so a failed case can be undone."""

    def __init__(self, *, storage: Storage | None = None) -> None:
        self.storage = storage or default_storage
        self.created: list[str] = []

    def write(self, path: str, data: bytes) -> str:
        if blob_write(path, data, storage=self.storage):
            self.created.append(path)
        return path

    def discard_unreferenced(self, is_referenced: Callable[[str], bool]) -> list[str]:
        """Delete the blobs this writer created that no row references; returns their paths."""
        removed = []
        for path in self.created:
            if not is_referenced(path):
                self.storage.delete(path)
                removed.append(path)
        self.created = []
        return removed


def stored_paths(*, storage: Storage | None = None, top: Iterable[str] = ()) -> list[str]:
    """Every file under the given top folders (all when empty), for audits and tests."""
    storage = storage or default_storage
    found: list[str] = []

    def walk(folder: str) -> None:
        try:
            dirs, files = storage.listdir(folder)
        except FileNotFoundError:
            return
        for name in files:
            found.append(f"{folder}/{name}" if folder else name)
        for name in dirs:
            walk(f"{folder}/{name}" if folder else name)

    for folder in list(top) or [""]:
        walk(folder)
    return sorted(found)
