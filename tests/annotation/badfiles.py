"""A corpus of files an import must refuse, each with the reason a user should read.

`bad_corpus(root)` writes the files under root and returns the PATHs to import and, for every
bad file, the name the report must give and a fragment of the reason it must state.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.annotation import cxrfiles

# The corpus is meant to run with these limits (tests set them with the settings fixture).
MAX_FILE_BYTES = 200_000
MAX_PIXELS = 4_000_000


@dataclass
class Corpus:
    paths: list[Path] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)  # report name -> reason fragment


def png_bomb(width: int = 16384, height: int = 8192) -> bytes:
    """A real decompression bomb: a 1-bit PNG of 134 M pixels in about 20 kB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" * (1 + width // 8)  # filter byte + packed pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row * 512) for _ in range(height // 512)) + packer.flush()
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(side).integers(0, 256, (side, side), dtype=np.uint8)
    return cxrfiles.png_bytes(Image.fromarray(pixels))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _dicom_without_pixels() -> bytes:
    ds, _ = cxrfiles.mono2_12bit(16, 16)
    del ds.PixelData
    return cxrfiles.dicom_bytes(ds)


def _dicom_header_bomb() -> bytes:
    ds, _ = cxrfiles.mono2_12bit(16, 16)
    ds.Rows = ds.Columns = 60000  # claims 3.6 G pixels over a few hundred bytes of data
    return cxrfiles.dicom_bytes(ds)


def _dicom_two_frames() -> bytes:
    ds, stored = cxrfiles.mono2_12bit(16, 16)
    ds.NumberOfFrames = 2
    ds.PixelData = np.concatenate([stored, stored]).tobytes()
    return cxrfiles.dicom_bytes(ds)


def _lossy_mask(side: int) -> bytes:
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[13:37, 11:29] = 255  # edges off the 8×8 JPEG blocks: ringing greys
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


def bad_corpus(root: Path) -> Corpus:
    """Bad files in a folder (some in a QaTa layout), a zip that tries to escape, a broken zip."""
    corpus = Corpus()
    folder = root / "bad"
    # Upside down, so it never equals a good case a test imports beside the corpus.
    good_png = cxrfiles.png_bytes(Image.fromarray(cxrfiles.grey8(64, 64)[::-1]))
    ds, _ = cxrfiles.mono2_12bit(64, 64)
    good_dicom = cxrfiles.dicom_bytes(ds)
    grey_mask = np.zeros((64, 64), dtype=np.uint8)
    grey_mask[10:20, 10:20], grey_mask[30:40, 30:40] = 255, 128
    files = {
        "empty.png": (b"", "file is empty"),
        "truncated.png": (good_png[: len(good_png) // 2], "PNG data is truncated or corrupt"),
        "truncated.jpg": (
            cxrfiles.jpeg_with_orientation(1, 64, 64)[:400],
            "JPEG data is truncated or corrupt",
        ),
        "notes.png": (b"Patient list\nnot an image at all\n", "not a PNG, JPEG or DICOM image"),
        "random.dcm": (bytes(range(256)) * 4, "not a PNG, JPEG or DICOM image"),
        "bomb.png": (png_bomb(), "over the limit of 4,000,000 pixels"),
        "too-big.png": (noise_png(512), "over the limit of 200,000 bytes"),
        "report.dcm": (_dicom_without_pixels(), "DICOM file has no pixel data"),
        "truncated.dcm": (good_dicom[: len(good_dicom) - 3000], "truncated"),
        "header-only.dcm": (good_dicom[:200], "DICOM file has no pixel data"),
        "header-bomb.dcm": (_dicom_header_bomb(), "over the limit of 4,000,000 pixels"),
        "cine.dcm": (_dicom_two_frames(), "DICOM has 2 frames"),
        "nested.zip": (b"PK\x05\x06" + b"\x00" * 18, "archives inside folders are not opened"),
        # QaTa layout: the mask is the bad file, so the report names the mask.
        "Images/small.png": (good_png, None),
        "Ground-truths/mask_small.png": (
            cxrfiles.mask_png(np.zeros((32, 40), bool)),
            "mask is 40×32 but the image is 64×64; small.png was not imported either",
        ),
        "Images/grey.png": (good_png, None),
        "Ground-truths/mask_grey.png": (
            cxrfiles.png_bytes(Image.fromarray(grey_mask)),
            "mask is not binary: values 0, 128, 255",
        ),
        "Images/lossy.png": (good_png, None),
        "Ground-truths/mask_lossy.png": (_lossy_mask(64), "mask is not binary: values 0, "),
        "Ground-truths/mask_orphan.png": (
            cxrfiles.mask_png(np.zeros((64, 64), bool)),
            "mask has no matching image (looked for Images/orphan.png)",
        ),
    }
    for rel, (data, reason) in files.items():
        _write(folder / rel, data)
        if reason is not None:
            corpus.expected[f"bad/{rel}"] = reason
    (folder / "link.png").symlink_to(folder / "Images" / "small.png")
    corpus.expected["bad/link.png"] = "symbolic link; not followed"
    corpus.paths.append(folder)

    escape = root / "escape.zip"
    with zipfile.ZipFile(escape, "w") as archive:
        for name in ("../outside.png", "/etc/absolute.png", "Images/../../up.png", "C:/win.png"):
            archive.writestr(name, good_png)
            corpus.expected[f"escape.zip:{name}"] = "zip entry escapes the target folder"
        link = zipfile.ZipInfo("Images/link.png")
        link.external_attr = (0o120777 << 16) | 0
        archive.writestr(link, "/etc/passwd")
        corpus.expected["escape.zip:Images/link.png"] = "zip entry is a symbolic link"
        archive.writestr("Images/crc.png", good_png, compress_type=zipfile.ZIP_STORED)
    # Damage the stored member's bytes after the fact: its CRC no longer matches.
    with zipfile.ZipFile(escape) as archive:
        offset = archive.getinfo("Images/crc.png").header_offset
    raw = bytearray(escape.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[offset + 26 : offset + 30])
    raw[offset + 30 + name_length + extra_length + 100] ^= 0xFF
    escape.write_bytes(bytes(raw))
    corpus.expected["escape.zip:Images/crc.png"] = "cannot be read: Bad CRC-32"
    corpus.paths.append(escape)

    broken = root / "broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("Images/a.png", good_png)
    broken.write_bytes(broken.read_bytes()[:-30])  # central directory cut off
    corpus.expected["broken.zip"] = "not a readable zip archive"
    corpus.paths.append(broken)
    return corpus
