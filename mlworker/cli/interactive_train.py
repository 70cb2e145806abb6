"""`python -m mlworker interactive-train`: train the click-refinement network on the masks of a
QaTa-COV19-layout folder (every image with a non-empty mask), optionally starting sessions
from candidate masks in another folder (same mask file names as Ground-truths/).

Writes the network to --out and what was trained (encoding, epochs, history) beside it as
JSON. Training runs in memory: an interrupted run starts again from the beginning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlworker.cli._shared import fail, read_folder
from mlworker.data import DataError, mask_file, read_mask


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="QaTa-COV19-layout folder")
    parser.add_argument("--out", required=True, type=Path, help="trained model file (.keras)")
    parser.add_argument("--candidates", type=Path, help="folder of candidate masks (optional)")
    parser.add_argument("--size", type=int, default=256, help="working resolution (default 256)")
    parser.add_argument("--epochs", type=int, default=20, help="default 20")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-zones", action="store_true", help="no lung-zone prompt channel")


def check_args(args: argparse.Namespace) -> str | None:
    if args.out.suffix != ".keras":
        return f"--out must end in .keras, got {args.out}"
    if not args.out.parent.is_dir():
        return f"the folder of --out does not exist: {args.out.parent}"
    if args.candidates is not None and not args.candidates.is_dir():
        return f"--candidates is not a folder: {args.candidates}"
    if args.size < 16 or args.size % 16:
        return f"--size must be a multiple of 16, got {args.size}"
    if args.epochs < 1 or args.batch < 2:
        return "--epochs must be at least 1 and --batch at least 2"
    return None


def read_candidates(folder: Path, names: list[str], size: int) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for name in names:
        path = mask_file(folder, name)
        try:
            out.append(None if path is None else read_mask(path, (size, size)))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the candidate of {name}: {exc}") from exc
    return out


def run(args: argparse.Namespace) -> int:
    problem = check_args(args)
    if problem:
        return fail(problem)
    try:
        cases = read_folder(args.data, args.size)
        keep = np.flatnonzero(cases.masks.reshape(len(cases), -1).any(axis=1))
        if len(keep) < 2:
            return fail(f"fewer than two images with a non-empty mask in {args.data}")
        cases = cases.subset(keep)
        candidates = (
            read_candidates(args.candidates, cases.names, args.size) if args.candidates else None
        )
    except DataError as exc:
        return fail(str(exc))

    from mlworker.interactive.training import train_interactive_file

    found = "" if candidates is None else f", {sum(c is not None for c in candidates)} candidates"
    print(f"training on {len(cases)} masks at {args.size}px{found}", file=sys.stderr)
    bar = tqdm(unit="batch", disable=None)

    def report(event: dict) -> None:
        if event["event"] == "batch":
            if event["batch"] == 1:
                bar.reset(total=event["batches"])
                bar.set_description(f"epoch {event['epoch']}/{event['epochs']}")
            bar.update(1)
            bar.set_postfix(loss=f"{event['loss']:.4f}")
        else:
            tqdm.write(
                f"epoch {event['epoch']}/{event['epochs']}: loss {event['loss']:.4f} "
                f"dice {event.get('dice', 0):.4f}",
                file=sys.stderr,
            )

    try:
        info = train_interactive_file(
            images=cases.images,
            masks=cases.masks,
            candidates=candidates,
            out=args.out,
            epochs=args.epochs,
            batch_size=args.batch,
            lr=args.lr,
            seed=args.seed,
            zones=not args.no_zones,
            progress=report,
        )
    except KeyboardInterrupt:
        bar.close()
        print("interrupted; nothing written", file=sys.stderr)
        return 130
    except ValueError as exc:
        bar.close()
        return fail(str(exc))
    bar.close()
    info["train_names"] = list(cases.names)
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    print(f"wrote {args.out} ({info['epochs']} epochs)", file=sys.stderr)
    return 0
