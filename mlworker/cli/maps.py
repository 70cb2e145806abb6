"""`python -m mlworker maps`: infection maps and COVID-19 verdicts for a folder of CXRs.

Writes OUT/<name>_map.png per image (at the image's full resolution) and OUT/verdicts.csv
with one row per image: name, covid (1/0), max_prob, severity (infected fraction of the
image at the threshold).

The segmentation network is loaded with keras.saving.load_model and run in batches on
the images resized to its input size, RGB in [0, 255] (the networks in mlworker.nets
carry their own preprocessing). mlworker.predict did not exist when this was written,
so the batch loop is local (`_predict_batch`).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cxrio import qata
from mlworker.data import IMAGE_SUFFIXES, DataError, read_image
from mlworker.detection.rule import DEFAULT_THRESHOLD, detect
from mlworker.maps import DEFAULT_EPS, write_infection_map_png

VERDICT_COLUMNS = ("name", "covid", "max_prob", "severity")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="trained network (.keras)")
    parser.add_argument(
        "--images",
        required=True,
        nargs="+",
        type=Path,
        help="image files and/or folders of images (a QaTa-COV19 folder's Images/ is used)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="a pixel is infected, and the case COVID-19, at Ŷ ≥ threshold (default 0.5)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument(
        "--eps", type=float, default=DEFAULT_EPS, help="Ŷ below this shows the plain X-ray"
    )


def _image_files(entries: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            folder = next((entry / i for i, _ in qata.FOLDER_PAIRS if (entry / i).is_dir()), entry)
            found = sorted(
                p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise DataError(f"{entry} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files += found
        elif entry.is_file():
            if entry.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{entry} is not an image file ({entry.suffix or 'no suffix'})")
            files.append(entry)
        else:
            raise DataError(f"{entry} does not exist")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise DataError(
                f"two images would both write {path.stem}_map.png: {stems[path.stem]}, {path}"
            )
        stems[path.stem] = path
    for path in files:  # fail before writing anything, not halfway through
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # Pillow raises many types for a broken file
            raise DataError(f"{path} cannot be read as an image: {error}") from None
    return files


def _load_model(path: Path):
    if not path.is_file():
        raise DataError(f"model file {path} does not exist")
    import keras

    import mlworker.nets  # noqa: F401  registers the custom layers the saved networks use

    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # a wrong or damaged file: say which, keep the cause
        raise DataError(f"cannot load model {path}: {error}") from error
    shape = tuple(model.inputs[0].shape)
    if len(model.inputs) != 1 or len(shape) != 4 or None in shape[1:]:
        raise DataError(f"model {path} must take one (batch, H, W, C) image input, got {shape}")
    return model


def _mask_output(outputs, model) -> np.ndarray:
    """The infection map output: the one named "mask" when there are several (UNet++ DS)."""
    if isinstance(outputs, dict):
        outputs = outputs.get("mask", list(outputs.values())[-1])
    elif isinstance(outputs, list | tuple):
        names = list(getattr(model, "output_names", []))
        outputs = outputs[names.index("mask")] if "mask" in names else outputs[-1]
    prob = np.asarray(outputs, dtype=np.float32)
    if prob.ndim == 4 and prob.shape[-1] == 1:
        prob = prob[..., 0]
    if prob.ndim != 3:
        raise DataError(f"the model gives {prob.shape}, not a probability map per image")
    return prob


def _predict_batch(model, images: list[np.ndarray]) -> np.ndarray:
    """Ŷ for full-resolution uint8 greyscale images, at the network's input size."""
    _, height, width, channels = model.inputs[0].shape
    batch = np.empty((len(images), height, width, channels), dtype=np.float32)
    for i, image in enumerate(images):
        small = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
        batch[i] = np.asarray(small, dtype=np.float32)[..., None]  # grey → every channel
    return np.clip(_mask_output(model.predict_on_batch(batch), model), 0.0, 1.0)


def _batches(files: list[Path], size: int) -> Iterator[tuple[list[Path], list[np.ndarray]]]:
    for start in range(0, len(files), size):
        chunk = files[start : start + size]
        images = []
        for path in chunk:
            with Image.open(path) as image:
                width, height = image.size
            images.append(read_image(path, (height, width)))  # full resolution, 8-bit
        yield chunk, images


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:
        if not 0.0 < args.threshold <= 1.0:
            raise DataError(f"--threshold must be in (0, 1], got {args.threshold}")
        if args.batch_size < 1:
            raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
        files = _image_files(args.images)
        model = _load_model(args.model)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tqdm(total=len(files), unit="image", desc="infection maps", file=sys.stderr) as bar:
        for chunk, images in _batches(files, args.batch_size):
            probs = _predict_batch(model, images)
            for path, image, prob in zip(chunk, images, probs, strict=True):
                write_infection_map_png(
                    args.out / f"{path.stem}_map.png", image, prob, eps=args.eps
                )
                verdict = detect(prob, threshold=args.threshold)
                rows.append(
                    (
                        path.stem,
                        int(verdict.covid),
                        f"{verdict.max_prob:.6f}",
                        f"{verdict.severity:.6f}",
                    )
                )
                bar.update(1)

    with open(args.out / "verdicts.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(VERDICT_COLUMNS)
        writer.writerows(rows)
    covid = sum(row[1] for row in rows)
    print(f"{len(rows)} maps in {args.out}; {covid} called COVID-19 at threshold {args.threshold}")
    return 0
