"""Device entry of the QaTa-COV19 gpu profile: train + evaluate, then put what must come back
under OUT within the device tool's limits (8 files, 16 MiB each, 64 MiB together):

    OUT/log.txt              written by run_qata_gpu.sh
    OUT/metrics.json         mlworker.evaluate's report on the validation split, with the run
                             (config, per-epoch history, timings) under "run"
    OUT/gallery.png          best / median / worst infection maps
    OUT/model.keras.partNN   the float32 .keras file in parts of 15 MiB:
                             `cat model.keras.part* > model.keras`

Arguments after `--` go to bench/qata_benchmark.py (e.g. `-- --encoder chexnet`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import log, split_file  # noqa: E402

PART_BYTES = 15 * 2**20
MAX_PARTS = 4  # 60 MiB; with log, metrics and gallery: 7 files, under 64 MiB


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pack", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True, help="scratch folder (checkpoints)")
    p.add_argument("--out", type=Path, required=True)
    args, rest = p.parse_known_args()
    rest = [a for a in rest if a != "--"]
    from bench.qata_benchmark import main as benchmark

    code = benchmark(
        [
            "--profile",
            "gpu",
            "--pack",
            str(args.pack),
            "--out",
            str(args.work),
            "--max-weight-mib",
            str(PART_BYTES * MAX_PARTS / 2**20),
            *rest,
        ]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for source, name in (
        (args.work / "report" / "metrics.json", "metrics.json"),
        (args.work / "report" / "gallery.png", "gallery.png"),
    ):
        if source.is_file():
            shutil.copyfile(source, args.out / name)
    model = args.work / "model.keras"
    if model.is_file():
        parts = split_file(model, PART_BYTES)
        for part in parts:
            shutil.move(part, args.out / part.name)
        log(
            f"model.keras ({model.stat().st_size / 2**20:.1f} MiB) in {len(parts)} parts under {args.out}"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
