"""DICOM radiographs: decode to a display image with pydicom's own LUT functions, and de-identify.

No Django here. Patient identifiers leave this module only as DecodedImage.patient_id, which the
caller hashes; the de-identified file keeps an allowlist of image attributes and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import struct
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_voi_lut
from pydicom.pixels.processing import apply_windowing
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cxrio.pixels import DICOM, DecodedImage, ImageError, check_pixel_limit, to_display

# What a radiograph needs to be displayed and described, nothing about the person or the visit.
# Group 0028 (image pixel and LUT modules) and 7FE0 (pixel data) are kept whole.
_KEEP_KEYWORDS = frozenset(
    {
        "SpecificCharacterSet",
        "ImageType",
        "SOPClassUID",
        "Modality",
        "BodyPartExamined",
        "ViewPosition",
        "ImageLaterality",
        "Laterality",
        "PatientOrientation",
        "ImagerPixelSpacing",
        "PresentationLUTShape",
        "PresentationLUTSequence",
    }
)
_KEEP_GROUPS = frozenset({0x0028, 0x7FE0})
_REPLACED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_GREY = ("MONOCHROME1", "MONOCHROME2")
_READ_ERRORS = (InvalidDicomError, EOFError, ValueError, struct.error, KeyError, TypeError, OSError)


def read_dataset(data: bytes) -> Dataset:
    try:
        # force: files without the 128-byte preamble are still DICOM (sniffed by the caller).
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except _READ_ERRORS as exc:
        raise ImageError(
            f"DICOM header cannot be read; the file is truncated or damaged ({exc})"
        ) from exc


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()[:64]


def _facts(ds: Dataset) -> dict[str, Any]:
    """Non-identifying acquisition facts for Radiograph.metadata."""
    facts: dict[str, Any] = {"format": DICOM}
    for key, keyword in (
        ("modality", "Modality"),
        ("photometric_interpretation", "PhotometricInterpretation"),
        ("view_position", "ViewPosition"),
        ("body_part_examined", "BodyPartExamined"),
    ):
        if text := _text(ds, keyword):
            facts[key] = text
    for key, keyword in (
        ("bits_allocated", "BitsAllocated"),
        ("bits_stored", "BitsStored"),
        ("pixel_representation", "PixelRepresentation"),
    ):
        if ds.get(keyword) is not None:
            facts[key] = int(ds.get(keyword))
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if ds.get(keyword):
            facts["pixel_spacing_mm"] = [float(v) for v in ds.get(keyword)][:2]
            break
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        facts["transfer_syntax"] = UID(syntax).name
    if ds.get("SOPClassUID"):
        facts["sop_class"] = UID(ds.SOPClassUID).name
    return facts


def _window(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float, dict[str, Any]]:
    """VOI LUT or window from the file when it has one (pydicom applies it), else min-max."""
    try:
        if ds.get("VOILUTSequence"):
            item = ds.VOILUTSequence[0]
            entries, first = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
            out = apply_voi_lut(values, ds)
            # The LUT's own output range; some files claim 16-bit entries and fill 12.
            lut = apply_voi(np.arange(first, first + entries), ds)
            return out, float(lut.min()), float(lut.max()), {"method": "voi-lut"}
        if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            out = apply_voi_lut(values, ds)
            with np.errstate(over="ignore"):
                ends = apply_windowing(np.array([-1e12, 1e12]), ds)
            center, width = ds.WindowCenter, ds.WindowWidth
            window = {
                "method": "window",
                "center": float(center[0] if ds["WindowCenter"].VM > 1 else center),
                "width": float(width[0] if ds["WindowWidth"].VM > 1 else width),
                "function": _text(ds, "VOILUTFunction") or "LINEAR",
            }
            return out, float(ends.min()), float(ends.max()), window
    except (ValueError, NotImplementedError, IndexError, AttributeError) as exc:
        low, high = float(values.min()), float(values.max())
        return values, low, high, {"method": "min-max", "ignored": f"unusable VOI: {exc}"[:120]}
    low, high = float(values.min()), float(values.max())
    return values, low, high, {"method": "min-max", "low": low, "high": high}


def _pixel_array(ds: Dataset) -> np.ndarray:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    name = UID(syntax).name if syntax else "an unknown transfer syntax"
    try:
        return ds.pixel_array
    except (NotImplementedError, ImportError) as exc:
        raise ImageError(
            f"DICOM pixel data in {name} is not supported by the installed decoders ({exc})"
        ) from exc
    except RuntimeError as exc:  # every installed decoder for this syntax tried and failed
        raise ImageError(f"DICOM pixel data in {name} is damaged ({exc})") from exc
    except (ValueError, EOFError, struct.error, KeyError, TypeError, AttributeError) as exc:
        raise ImageError(f"DICOM pixel data is truncated or damaged ({exc})") from exc


def decode_dicom(data: bytes, *, max_pixels: int) -> DecodedImage:
    ds = read_dataset(data)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError(
            "DICOM file has no pixel data (a report or other non-image object, or truncated)"
        )
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageError(f"DICOM image size (Rows/Columns) is missing or invalid ({exc})") from exc
    check_pixel_limit(columns, rows, max_pixels=max_pixels, frames=frames)
    if frames != 1:
        raise ImageError(f"DICOM has {frames} frames; a radiograph has one")
    photometric = _text(ds, "PhotometricInterpretation").upper()
    facts = _facts(ds)
    arr = _pixel_array(ds)
    if photometric in _GREY:
        if arr.ndim != 2:
            raise ImageError(f"DICOM {photometric} pixel data has shape {arr.shape}, not 2-D")
        values = apply_modality_lut(arr, ds)
        windowed, low, high, window = _window(values, ds)
        display = to_display(windowed, low=low, high=high)
        # MONOCHROME1 stores dense tissue dark; readers expect bright bones, dark lungs.
        inverse_shape = _text(ds, "PresentationLUTShape").upper() == "INVERSE"
        if photometric == "MONOCHROME1" or inverse_shape:
            display = 255 - display
            facts["inverted"] = True
    else:
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ImageError(f"DICOM {photometric or 'colour'} pixel data has shape {arr.shape}")
        # pydicom hands YBR data back as RGB; readers get its luma.
        values = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        window = {"method": "min-max", "low": float(values.min()), "high": float(values.max())}
        top = 255.0 if arr.dtype == np.uint8 else float(values.max())
        display = to_display(values, low=0.0 if arr.dtype == np.uint8 else window["low"], high=top)
    facts["window"] = window
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    patient_id = _text(ds, "PatientID") or None
    return DecodedImage(
        pixels=np.asarray(values),
        display=np.ascontiguousarray(display),
        source_format=DICOM,
        bit_depth=bits,
        metadata=facts,
        patient_id=patient_id,
    )


def derived_uid(uid: str, *, salt: bytes) -> str:
    """A stable replacement UID that cannot be traced back without the salt."""
    digest = hmac.new(salt, uid.encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def deidentify_dicom(data: bytes, *, salt: bytes) -> bytes:
    """The file with only image attributes kept and its UIDs replaced, as Part-10 bytes.

    Same input and salt give the same bytes, so the stored file stays content-addressed.
    """
    ds = read_dataset(data)
    out = Dataset()
    for elem in ds:
        if elem.tag.is_private:
            continue
        if elem.tag.group in _KEEP_GROUPS or elem.keyword in _KEEP_KEYWORDS:
            out.add(elem)
    for keyword in _REPLACED_UIDS:
        if ds.get(keyword):
            setattr(out, keyword, derived_uid(str(ds.get(keyword)), salt=salt))
    if not out.get("SOPInstanceUID"):
        out.SOPInstanceUID = derived_uid(hashlib.sha256(data).hexdigest(), salt=salt)
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "collabmask: allowlist of image attributes, UIDs replaced"

    meta = FileMetaDataset()
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not syntax:
        implicit, _little = ds.original_encoding
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.TransferSyntaxUID = syntax
    meta.MediaStorageSOPClassUID = out.get("SOPClassUID") or "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.file_meta = meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, out, enforce_file_format=True)
    return buffer.getvalue()
