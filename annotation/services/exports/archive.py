"""A zip written entry by entry, hashing each entry as it goes.

Nothing here holds more than one entry's bytes (or one chunk of a streamed entry) in memory:
the zip itself is a file on disk, the list of checksums is spooled to a temporary file and
becomes the archive's SHA256SUMS at the end. What does grow is zipfile's central directory
(a few hundred bytes per entry, written at the end as the format requires).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from datetime import datetime
from typing import BinaryIO

SUMS_NAME = "SHA256SUMS"
_CHUNK = 1 << 20


class HashingZip:
    """Writes entries into `target` (an open binary file) and records their sha256."""

    def __init__(self, target: BinaryIO, *, date_time: datetime, spool_dir: str) -> None:
        self._zip = zipfile.ZipFile(target, "w", allowZip64=True)
        self._date_time = date_time.timetuple()[:6]
        self._sums = tempfile.TemporaryFile(mode="w+", encoding="utf-8", dir=spool_dir)  # noqa: SIM115 - closed in close()
        self.entries = 0

    def _info(self, name: str, *, compress: bool) -> zipfile.ZipInfo:
        if name in self._zip.NameToInfo:
            raise ValueError(f"the export already has an entry named {name!r}")
        info = zipfile.ZipInfo(name, date_time=self._date_time)
        # PNGs are compressed already: deflating them again costs time and saves nothing.
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        return info

    def _record(self, name: str, sha256: str) -> str:
        self._sums.write(f"{sha256}  {name}\n")
        self.entries += 1
        return sha256

    def write_bytes(self, name: str, data: bytes, *, compress: bool = False) -> str:
        """Add one entry; returns its sha256."""
        self._zip.writestr(self._info(name, compress=compress), data)
        return self._record(name, hashlib.sha256(data).hexdigest())

    def write_chunks(self, name: str, chunks: Iterable[bytes], *, compress: bool = True) -> str:
        """Add one entry from chunks of unknown total size; returns its sha256."""
        digest = hashlib.sha256()
        with self._zip.open(self._info(name, compress=compress), "w", force_zip64=True) as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        return self._record(name, digest.hexdigest())

    def write_file(self, name: str, source: BinaryIO, *, compress: bool = True) -> str:
        """Add one entry copied from an open binary file (from its start)."""
        source.seek(0)
        return self.write_chunks(name, iter(lambda: source.read(_CHUNK), b""), compress=compress)

    def close(self) -> None:
        """Write SHA256SUMS (every entry but itself) and finish the archive."""
        self._sums.seek(0)
        info = self._info(SUMS_NAME, compress=True)
        with self._zip.open(info, "w", force_zip64=True) as out:
            shutil.copyfileobj(self._sums, _Utf8Writer(out), _CHUNK)
        self._sums.close()
        self._zip.close()

    def abort(self) -> None:
        self._sums.close()
        self._zip.close()


class _Utf8Writer:
    """Lets shutil.copyfileobj copy text chunks into a binary zip entry."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        return self._out.write(text.encode("utf-8"))
