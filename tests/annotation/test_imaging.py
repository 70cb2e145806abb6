"""Decoding radiographs and masks, without Django: what a reader will be shown."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, JPEG2000Lossless, RLELossless

from cxrio import masks
from cxrio.dicom import decode_dicom, deidentify_dicom, read_dataset
from cxrio.images import ImageError, decode_image, encode_png
from tests.annotation import cxrfiles

LIMIT = 64 * 1024 * 1024


def decode(data: bytes, *, limit: int = LIMIT):
    return decode_image(data, max_pixels=limit)


def test_it_keeps_an_8bit_grey_png_as_is():
    decoded = decode(cxrfiles.png8())
    assert decoded.source_format == "png"
    assert decoded.bit_depth == 8
    assert (decoded.width, decoded.height) == (80, 96)
    assert np.array_equal(decoded.display, cxrfiles.grey8())


def test_it_stretches_a_16bit_png_to_the_full_display_range():
    decoded = decode(cxrfiles.png16(top=4095))
    assert decoded.bit_depth == 16
    assert decoded.pixels.dtype == np.uint16 and decoded.pixels.max() > 255
    assert decoded.display.min() == 0 and decoded.display.max() == 255
    assert cxrfiles.lungs_darker(decoded.display)
    # Order is kept: a brighter stored value is never shown darker.
    order = np.argsort(decoded.pixels, axis=None, kind="stable")
    assert np.all(np.diff(decoded.display.ravel()[order].astype(int)) >= 0)


def test_it_reads_palette_rgba_and_grey_alpha_pngs_as_grey():
    grey = cxrfiles.grey8()
    palette = Image.fromarray(grey).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    rgba = Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]), "RGBA")
    rgb = Image.fromarray(np.dstack([grey, grey, grey]), "RGB")
    half_transparent = np.dstack([grey, np.where(grey > 200, 0, 255).astype(np.uint8)])
    for image, expect in (
        (palette, np.asarray(palette.convert("L"))),
        (rgba, grey),
        (rgb, grey),
        (Image.fromarray(half_transparent, "LA"), np.where(grey > 200, 0, grey)),
    ):
        decoded = decode(cxrfiles.png_bytes(image))
        assert decoded.display.dtype == np.uint8 and decoded.display.ndim == 2
        assert np.abs(decoded.display.astype(int) - expect).max() <= 1, image.mode


def test_it_turns_a_jpeg_upright_by_its_exif_orientation():
    decoded = decode(cxrfiles.jpeg_with_orientation(6))
    # Stored 96 wide × 48 high; orientation 6 means "rotate 90° clockwise to view".
    assert (decoded.width, decoded.height) == (48, 96)
    assert decoded.metadata["exif_orientation"] == 6
    top_right = decoded.display[:20, -12:].mean()
    top_left = decoded.display[:20, :12].mean()
    assert top_right > 200 and top_left < 100


def test_it_inverts_monochrome1_and_applies_the_window():
    ds, stored = cxrfiles.mono1_16bit()
    decoded = decode(cxrfiles.dicom_bytes(ds))
    assert decoded.bit_depth == 16
    assert decoded.metadata["photometric_interpretation"] == "MONOCHROME1"
    assert decoded.metadata["window"]["center"] == 40000
    assert cxrfiles.lungs_darker(decoded.display)
    # Both ends of the window clip: air above the shoulders and the spine saturate.
    assert decoded.display[:5].max() == 0
    assert decoded.display[cxrfiles.regions(96, 80)["mediastinum"]].min() == 255
    # DICOM's LINEAR window (PS3.3 C.11.2.1.2.1), then MONOCHROME1 turned into MONOCHROME2.
    center, width = 40000 - 0.5, 30000 - 1
    linear = np.clip((stored - center) / width + 0.5, 0, 1) * 255
    assert np.abs(decoded.display.astype(float) - (255 - linear)).max() <= 1


def test_it_applies_a_voi_lut_sequence_in_preference_to_the_window():
    ds, stored = cxrfiles.mono1_16bit()
    # Claims 16-bit entries but fills only 12 bits, as some devices do.
    cxrfiles.with_voi_lut(ds, first_map=20000, entries=4096, top=4095)
    decoded = decode(cxrfiles.dicom_bytes(ds))
    assert decoded.metadata["window"]["method"] == "voi-lut"
    lut_index = np.clip(stored.astype(int) - 20000, 0, 4095)
    expected = 255 - np.rint(lut_index / 4095 * 255)
    assert np.abs(decoded.display.astype(int) - expected).max() <= 1


def test_it_reads_12bit_monochrome2_without_a_window():
    ds, stored = cxrfiles.mono2_12bit()
    decoded = decode(cxrfiles.dicom_bytes(ds, preamble=False))
    assert decoded.bit_depth == 12
    assert decoded.metadata["window"]["method"] == "min-max"
    assert decoded.display.min() == 0 and decoded.display.max() == 255
    assert cxrfiles.lungs_darker(decoded.display)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_it_decodes_compressed_dicom(syntax):
    ds, stored = cxrfiles.mono2_12bit()
    plain = decode(cxrfiles.dicom_bytes(ds)).display
    ds.compress(syntax, stored)
    data = cxrfiles.dicom_bytes(ds)
    decoded = decode(data)
    assert decoded.metadata["transfer_syntax"] == syntax.name
    assert np.array_equal(decoded.display, plain)


def test_it_decodes_a_jpeg_baseline_dicom():
    pixels = cxrfiles.grey8()
    decoded = decode(cxrfiles.dicom_bytes(cxrfiles.jpeg_baseline_dicom(pixels)))
    assert decoded.metadata["transfer_syntax"] == "JPEG Baseline (Process 1)"
    assert np.abs(decoded.pixels.astype(int) - pixels).mean() < 3
    assert cxrfiles.lungs_darker(decoded.display)


def test_it_names_a_transfer_syntax_it_cannot_decode():
    ds, _ = cxrfiles.mono2_12bit(16, 16)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageError, match="MPEG2 Main Profile / Main Level is not supported"):
        decode(cxrfiles.dicom_bytes(ds))


def test_deidentified_dicom_keeps_the_image_and_drops_the_patient():
    ds, _ = cxrfiles.mono1_16bit()
    data = cxrfiles.dicom_bytes(ds)
    clean = deidentify_dicom(data, salt=b"salt")
    for text in cxrfiles.PHI:
        assert text.encode() in data
        assert text.encode() not in clean
    assert str(ds.SOPInstanceUID).encode() not in clean
    assert deidentify_dicom(data, salt=b"salt") == clean  # stable: content-addressed
    again = decode_dicom(clean, max_pixels=LIMIT)
    assert np.array_equal(again.display, decode(data).display)
    assert again.patient_id is None
    assert read_dataset(clean).PatientIdentityRemoved == "YES"


def test_the_patient_id_is_handed_back_for_hashing_only():
    ds, _ = cxrfiles.mono2_12bit()
    decoded = decode(cxrfiles.dicom_bytes(ds))
    assert decoded.patient_id == cxrfiles.PATIENT_ID
    assert cxrfiles.PATIENT_ID not in repr(decoded.metadata)
    assert cxrfiles.PATIENT_NAME not in repr(decoded.metadata)


def test_real_monochrome1_cr_comes_out_with_dark_lungs(shared_data):
    path = shared_data / "real-cxr/dwv-gdcm-cr-chest-dicom/gdcm-CR-MONO1-10-chest.dcm"
    decoded = decode(path.read_bytes())
    assert (decoded.width, decoded.height, decoded.bit_depth) == (440, 440, 10)
    assert decoded.metadata["inverted"] is True
    height, width = decoded.display.shape
    rows = slice(height // 3, 2 * height // 3)
    lungs = np.r_[decoded.display[rows, width // 5 : 2 * width // 5].ravel(),
                  decoded.display[rows, 3 * width // 5 : 4 * width // 5].ravel()]  # fmt: skip
    mediastinum = decoded.display[rows, 9 * width // 20 : 11 * width // 20]
    assert lungs.mean() + 40 < mediastinum.mean()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "file is empty"),
        (b"just some notes, not an image\n", "not a PNG, JPEG or DICOM image"),
        (cxrfiles.png8()[:3000], "truncated or corrupt"),
        (cxrfiles.png8()[:20], "truncated or corrupt"),
    ],
    ids=["empty", "text", "truncated", "header-only"],
)
def test_it_explains_why_a_file_cannot_be_decoded(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode(data)


def test_the_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageError, match="over the limit of 1,000 pixels"):
        decode(cxrfiles.png8(), limit=1000)
    ds, _ = cxrfiles.mono2_12bit()
    with pytest.raises(ImageError, match="over the limit of 1,000 pixels"):
        decode(cxrfiles.dicom_bytes(ds), limit=1000)


def test_display_pngs_are_the_same_bytes_for_the_same_pixels():
    pixels = cxrfiles.grey8()
    assert encode_png(pixels) == encode_png(pixels.copy())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(pixels)))), pixels)


# --- masks ---------------------------------------------------------------------------------


def test_a_mask_round_trips_through_a_1bit_png():
    rng = np.random.default_rng(3)
    mask = rng.random((37, 51)) > 0.7
    data = masks.mask_to_png(mask)
    image = Image.open(io.BytesIO(data))
    assert image.mode == "1" and image.size == (51, 37)
    assert np.array_equal(masks.mask_from_png(data), mask)
    assert masks.mask_to_png(mask.copy()) == data


def test_a_numeric_mask_is_stored_as_the_same_bits_and_a_third_value_is_refused():
    mask = np.random.default_rng(0).uniform(size=(37, 53)) > 0.6
    assert masks.mask_to_png(mask.astype(np.uint8) * 255) == masks.mask_to_png(mask)
    assert masks.mask_to_png(mask.astype(np.uint8)) == masks.mask_to_png(mask)
    with pytest.raises(ValueError, match="two values"):
        masks.mask_to_png(np.array([[0, 1], [2, 0]]))


def test_a_qata_mask_file_is_8bit_0_255_and_reads_back_exactly():
    mask = np.random.default_rng(1).uniform(size=(37, 53)) > 0.6
    data = masks.mask_to_png_0_255(mask)
    image = Image.open(io.BytesIO(data))
    assert image.mode == "L" and set(np.unique(np.asarray(image))) <= {0, 255}
    assert np.array_equal(masks.mask_from_png(data), mask)
    assert masks.mask_to_png_0_255(mask.copy()) == data


@pytest.mark.parametrize("high", [1, 255])
def test_it_accepts_binary_masks_as_0_1_or_0_255(high):
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:9, 10:20] = True
    got = masks.binary_mask(cxrfiles.mask_png(mask, high=high), max_pixels=LIMIT)
    assert np.array_equal(got, mask)


def test_it_refuses_a_non_binary_mask_and_lists_the_values():
    values = np.zeros((20, 30), dtype=np.uint8)
    values[2:5, 2:5], values[10:12, 10:12] = 255, 128
    with pytest.raises(masks.MaskError, match=r"not binary: values 0, 128, 255"):
        masks.binary_mask(cxrfiles.png_bytes(Image.fromarray(values)), max_pixels=LIMIT)


def test_it_refuses_a_mask_of_another_size():
    data = cxrfiles.mask_png(np.zeros((20, 30), dtype=bool))
    with pytest.raises(masks.MaskError, match="mask is 30×20 but the image is 80×96"):
        masks.binary_mask(data, max_pixels=LIMIT, expected_size=(80, 96))


def test_pixel_hash_depends_on_foreground_and_size_only():
    mask = np.zeros((8, 8), dtype=bool)
    mask[2, 3] = True
    assert masks.pixel_sha256(mask) == masks.pixel_sha256(mask.astype(np.uint8))
    other = mask.copy()
    other[2, 4] = True
    assert masks.pixel_sha256(other) != masks.pixel_sha256(mask)
    assert masks.pixel_sha256(np.zeros((4, 16), bool)) != masks.pixel_sha256(np.zeros((8, 8), bool))


def test_working_size_scales_the_longer_side_and_never_enlarges():
    assert masks.working_size(2000, 1000, max_side=1024) == (1024, 512)
    assert masks.working_size(1000, 3000, max_side=1024) == (341, 1024)
    assert masks.working_size(224, 224, max_side=1024) == (224, 224)


def test_nearest_resize_keeps_masks_binary_and_in_place():
    mask = np.zeros((100, 100), dtype=bool)
    mask[20:60, 50:90] = True
    small = masks.resize_nearest(mask, width=50, height=50)
    assert small.dtype == bool and small.shape == (50, 50)
    assert small[10:30, 25:45].all() and small.sum() == 20 * 20
    assert np.array_equal(masks.resize_nearest(small, width=100, height=100), mask)
