"""`python -m mlworker predict`: masks and probability maps for a QaTa-COV19-layout folder.

Writes, for every radiograph in FOLDER/Images/ (resized to the working resolution):
  OUTDIR/Ground-truths/mask_<name>.png   binary mask at 0.5, 8-bit 0/255 like QaTa-COV19
  OUTDIR/probabilities/<name>.png        probability map, 8-bit greyscale (value = 255 p)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mlworker.data import DataError, load_qata_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="trained model (.keras)")
    parser.add_argument("--data", required=True, type=Path, help="QaTa-COV19-layout folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--size", type=int, help="working resolution (default: the model's input size)"
    )
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask threshold (0.5)")


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    if not args.model.is_file():
        return fail(f"no model file at {args.model}")
    if not args.data.is_dir():
        return fail(f"{args.data} is not a folder")
    if args.out.resolve() == args.data.resolve():
        return fail("--out must differ from --data: its Ground-truths/ would be overwritten")
    if args.batch < 1 or (args.size is not None and args.size < 1):
        return fail("--batch and --size must be positive")
    if not 0 < args.threshold < 1:
        return fail(f"--threshold must lie in (0, 1), got {args.threshold}")

    import keras

    import mlworker.losses  # noqa: F401  (registers the loss a saved model refers to)
    import mlworker.nets  # noqa: F401  (registers the custom layers)
    from mlworker.predict import (
        binarize,
        encode_probability_png,
        model_input_size,
        predict_probabilities,
    )

    try:
        model = keras.saving.load_model(args.model, compile=False)
    except Exception as exc:  # Keras raises many kinds for a bad file; all mean the same
        return fail(f"cannot load {args.model}: {exc}")
    size = args.size or (model_input_size(model) or (None,))[0]
    if size is None:
        return fail("the model accepts any size: give --size")
    try:
        with tqdm(desc="reading", unit="img", disable=None, leave=False) as bar:
            cases = load_qata_folder(
                args.data, size=size, progress=lambda done, total: bar.update(1)
            )
    except DataError as exc:
        return fail(str(exc))

    masks_dir, probs_dir = args.out / "Ground-truths", args.out / "probabilities"
    try:
        masks_dir.mkdir(parents=True, exist_ok=True)
        probs_dir.mkdir(exist_ok=True)
    except OSError as exc:
        return fail(f"cannot write to {args.out}: {exc}")

    with tqdm(total=len(cases), desc="predicting", unit="img", disable=None) as bar:
        probs = predict_probabilities(
            model,
            cases.images,
            batch_size=args.batch,
            progress=lambda event: bar.update(event["done"] - bar.n),
        )
    positive = 0
    for name, prob in zip(cases.names, probs, strict=True):
        stem = Path(name).stem
        mask = binarize(prob, args.threshold)
        positive += bool(mask.any())
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks_dir / f"mask_{stem}.png")
        (probs_dir / f"{stem}.png").write_bytes(encode_probability_png(prob))
    print(
        f"wrote {len(cases)} masks and probability maps at {size}px to {args.out} "
        f"({positive} with infection)",
        file=sys.stderr,
    )
    return 0
