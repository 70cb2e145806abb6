"""`python -m mlworker phantoms OUT_DIR ...`: write a phantom cohort in the QaTa-COV19 v2 layout."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

MIN_SIZE = 64
GALLERY_CASES = 24


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="a new or empty folder")
    parser.add_argument(
        "--covid", type=int, default=40, metavar="N", help="COVID-19 cases (default 40)"
    )
    parser.add_argument(
        "--control", type=int, default=20, metavar="M", help="control cases (default 20)"
    )
    parser.add_argument(
        "--size", type=int, default=256, metavar="S", help="image side in pixels (default 256)"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="cohort seed (default 0)")
    parser.add_argument(
        "--manual-fraction",
        type=float,
        default=0.3,
        metavar="F",
        help="share of COVID-19 cases that ship a manual mask (default 0.3)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="share of patients in the Test Set (default 0.2)",
    )
    parser.add_argument(
        "--gallery",
        type=Path,
        metavar="PATH",
        help=f"also write a PNG contact sheet of the first {GALLERY_CASES} cases",
    )


def _problems(args: argparse.Namespace) -> list[str]:
    problems = []
    for flag, n in (("--covid", args.covid), ("--control", args.control)):
        if n < 0:
            problems.append(f"{flag} must be 0 or more, got {n}")
    if args.covid >= 0 and args.control >= 0 and args.covid + args.control == 0:
        problems.append("nothing to write: --covid and --control are both 0")
    if args.size < MIN_SIZE:
        problems.append(f"--size must be at least {MIN_SIZE} pixels, got {args.size}")
    if args.seed < 0:
        problems.append(f"--seed must be 0 or more, got {args.seed}")
    for flag, f in (
        ("--manual-fraction", args.manual_fraction),
        ("--test-fraction", args.test_fraction),
    ):
        if not (math.isfinite(f) and 0.0 <= f <= 1.0):
            problems.append(f"{flag} must be within [0, 1], got {f}")
    out_dir: Path = args.out_dir
    if out_dir.exists() and not out_dir.is_dir():
        problems.append(f"OUT_DIR {out_dir} exists and is not a folder")
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        problems.append(f"OUT_DIR {out_dir} is not empty; choose a new or empty folder")
    if args.gallery is not None:
        if args.gallery.suffix.lower() != ".png":
            problems.append(f"--gallery must name a .png file, got {args.gallery}")
        elif args.gallery.exists():
            problems.append(f"--gallery {args.gallery} already exists; it is never overwritten")
    return problems


def run(args: argparse.Namespace) -> int:
    problems = _problems(args)
    if problems:
        for problem in problems:
            print(f"python -m mlworker phantoms: error: {problem}", file=sys.stderr)
        return 2

    # Imported here so that `--help` and argument errors stay instant.
    from tqdm import tqdm

    from mlworker.phantoms import plan_cohort, render_spec, write_gallery
    from mlworker.phantoms.layout import QataWriter, assign_splits, stratum

    started = time.perf_counter()
    specs = plan_cohort(
        seed=args.seed,
        n_covid=args.covid,
        n_control=args.control,
        manual_fraction=args.manual_fraction,
    )
    splits = assign_splits(
        ((s.patient_id, stratum(s.label, s.has_manual)) for s in specs),
        test_fraction=args.test_fraction,
    )
    meta = {
        "seed": args.seed,
        "size": args.size,
        "n_covid": args.covid,
        "n_control": args.control,
        "manual_fraction": args.manual_fraction,
        "split_fractions": [1.0 - args.test_fraction, args.test_fraction],
    }
    writer = QataWriter(args.out_dir, meta=meta)
    shown, manual_dice, counts = [], [], {"train": 0, "test": 0}
    for spec in tqdm(specs, desc="phantoms", unit="case", file=sys.stderr):
        case = render_spec(spec, size=args.size)
        split = splits[spec.patient_id]
        writer.add(case, split)
        counts[split] += 1
        if case.has_manual:
            manual_dice.append(case.manual_dice)
        if len(shown) < GALLERY_CASES:
            shown.append(case)
    writer.close()
    if args.gallery is not None:
        args.gallery.parent.mkdir(parents=True, exist_ok=True)
        write_gallery(shown, args.gallery)
    dice_text = (
        f"mean manual-vs-true Dice {sum(manual_dice) / len(manual_dice):.2f}"
        if manual_dice
        else "no manual masks"
    )
    print(
        f"wrote {len(specs)} phantoms ({args.covid} COVID-19, {len(manual_dice)} with manual masks; "
        f"{args.control} controls) of {args.size}x{args.size} px to {args.out_dir}: "
        f"Train Set {counts['train']}, Test Set {counts['test']}, {len(set(splits))} patients; "
        f"{dice_text}; {time.perf_counter() - started:.1f} s"
    )
    return 0
