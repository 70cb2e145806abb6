"""`python -m mlworker predict`: masks and probability maps for a QaTa-COV19-layout folder.

Writes, for every radiograph in FOLDER/Images/ (resized to the working resolution):
  OUTDIR/Ground-truths/mask_<name>.png   binary mask at 0.5, 8-bit 0/255 like QaTa-COV19
  OUTDIR/probabilities/<name>.png        probability map, 8-bit greyscale (value = 255 p)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from cxrio import qata
from cxrio.masks import mask_to_png_0_255
from mlworker.cli._shared import fail, load_trained_model, read_folder
from mlworker.data import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="trained model (.keras)")
    parser.add_argument("--data", required=True, type=Path, help="QaTa-COV19-layout folder")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--size", type=int, help="working resolution (default: the model's input size)"
    )
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask threshold (0.5)")
    parser.add_argument(
        "--mirror",
        action="store_true",
        help="test-time augmentation: average each map with the left-right mirrored image's",
    )


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

    from cxrio.masks import encode_probability_png
    from mlworker.predict import binarize, predict_probabilities

    try:
        model, size = load_trained_model(args.model, args.size)
        cases = read_folder(args.data, size)
    except DataError as exc:
        return fail(str(exc))

    masks_dir, probs_dir = args.out / qata.GROUND_TRUTHS, args.out / "probabilities"
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
            mirror=args.mirror,
        )
    positive = 0
    for name, prob in zip(cases.names, probs, strict=True):
        stem = Path(name).stem
        mask = binarize(prob, args.threshold)
        positive += bool(mask.any())
        (masks_dir / qata.png_mask_name(name)).write_bytes(mask_to_png_0_255(mask))
        (probs_dir / f"{stem}.png").write_bytes(encode_probability_png(prob))
    print(
        f"wrote {len(cases)} masks and probability maps at {size}px to {args.out} "
        f"({positive} with infection)",
        file=sys.stderr,
    )
    return 0
