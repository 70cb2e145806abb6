"""Generated radiograph files for import tests: PNG, JPEG and DICOM bytes from small phantoms.

The phantom looks like a frontal CXR in MONOCHROME2 terms: dark lungs, a bright spine and
mediastinum, mid-grey soft tissue, so a test can tell whether an image came out inverted.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

# Identifiers a test plants in DICOM files and then searches for in every stored byte.
PATIENT_NAME = "Quixote^Alonso"
PATIENT_ID = "PID-7Q4-118"
BIRTH_DATE = "19470312"
STUDY_DATE = "20200417"
ACQUISITION_DATETIME = "20200417093015"
INSTITUTION = "Hospital of La Mancha"
ACCESSION = "ACC99317"
PHI = (
    PATIENT_NAME,
    PATIENT_ID,
    BIRTH_DATE,
    STUDY_DATE,
    ACQUISITION_DATETIME,
    INSTITUTION,
    ACCESSION,
)


def phantom(height: int = 96, width: int = 80) -> np.ndarray:
    """Density in [0, 1] (1 = dense, shown bright in MONOCHROME2)."""
    yy, xx = np.mgrid[0:height, 0:width]
    density = np.full((height, width), 0.55)
    for cx in (0.3, 0.7):  # two lungs
        inside = ((xx / width - cx) / 0.16) ** 2 + ((yy / height - 0.5) / 0.3) ** 2 <= 1
        density[inside] = 0.15
    density[:, int(width * 0.45) : int(width * 0.55)] = 0.95  # spine / mediastinum
    density[: height // 12] = 0.0  # air above the shoulders
    # Film grain, so files compress like radiographs rather than like flat drawings.
    grain = np.random.default_rng(height * 1000 + width).normal(0, 0.02, density.shape)
    return np.clip(density + grain * (density > 0), 0, 1)


def regions(height: int, width: int) -> dict[str, tuple[slice, slice]]:
    """Where the phantom's lungs and mediastinum are, as array slices."""
    rows = slice(int(height * 0.4), int(height * 0.6))
    return {
        "lung": (rows, slice(int(width * 0.25), int(width * 0.35))),
        "mediastinum": (rows, slice(int(width * 0.46), int(width * 0.54))),
    }


def lungs_darker(display: np.ndarray) -> bool:
    where = regions(*display.shape)
    return display[where["lung"]].mean() + 40 < display[where["mediastinum"]].mean()


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def grey8(height: int = 96, width: int = 80) -> np.ndarray:
    return np.rint(phantom(height, width) * 255).astype(np.uint8)


def png8(height: int = 96, width: int = 80) -> bytes:
    return png_bytes(Image.fromarray(grey8(height, width)))


def png16(height: int = 96, width: int = 80, *, top: int = 4095) -> bytes:
    values = np.rint(phantom(height, width) * top).astype(np.uint16)
    return png_bytes(Image.fromarray(values))  # Pillow writes uint16 arrays as 16-bit grey


def mask_png(mask: np.ndarray, *, high: int = 255) -> bytes:
    return png_bytes(Image.fromarray((mask.astype(np.uint8) * high).astype(np.uint8)))


def jpeg_with_orientation(orientation: int, height: int = 48, width: int = 96) -> bytes:
    """A landscape JPEG with a bright block at its stored top-left and an EXIF orientation."""
    pixels = np.full((height, width), 60, dtype=np.uint8)
    pixels[: height // 3, : width // 4] = 250
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def dicom_dataset(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    signed: bool = False,
    with_phi: bool = True,
) -> Dataset:
    """A CR-like DICOM dataset holding `stored` (uint8/uint16/int16) uncompressed."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    if with_phi:
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = BIRTH_DATE
        ds.StudyDate = STUDY_DATE
        ds.AcquisitionDateTime = ACQUISITION_DATETIME
        ds.InstitutionName = INSTITUTION
        ds.AccessionNumber = ACCESSION
        ds.OtherPatientIDsSequence = Sequence([Dataset()])
        ds.OtherPatientIDsSequence[0].PatientID = PATIENT_ID
        ds.add_new(0x00091010, "LO", PATIENT_NAME)  # a private tag carrying the name
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


def dicom_bytes(ds: Dataset, *, preamble: bool = True) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=preamble)
    return buffer.getvalue()


def mono1_16bit(height: int = 96, width: int = 80) -> tuple[Dataset, np.ndarray]:
    """MONOCHROME1 (dense = low value), 16 bits stored, with a window that clips both ends."""
    stored = np.rint(20000 + (1 - phantom(height, width)) * 40000).astype(np.uint16)
    ds = dicom_dataset(stored, photometric="MONOCHROME1", bits_stored=16)
    ds.WindowCenter = 40000
    ds.WindowWidth = 30000
    return ds, stored


def mono2_12bit(height: int = 96, width: int = 80) -> tuple[Dataset, np.ndarray]:
    stored = np.rint(phantom(height, width) * 4095).astype(np.uint16)
    return dicom_dataset(stored, photometric="MONOCHROME2", bits_stored=12), stored


def with_voi_lut(ds: Dataset, *, first_map: int, entries: int, top: int) -> Dataset:
    """A VOI LUT Sequence mapping [first_map, first_map + entries) linearly to 0..top."""
    item = Dataset()
    item.LUTDescriptor = [entries, first_map, 16]
    item.LUTData = np.rint(np.linspace(0, top, entries)).astype(np.uint16).tolist()
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = Sequence([item])
    return ds


def jpeg_baseline_dicom(pixels: np.ndarray) -> Dataset:
    """8-bit MONOCHROME2 pixels JPEG-compressed by Pillow inside an encapsulated dataset."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    ds = dicom_dataset(pixels, bits_stored=8)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    return ds
