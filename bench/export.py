"""Export throughput and memory: N cases at S×S pixels, against the same export at N/10.

    .venv/bin/python bench/export.py                 # 3,000 cases at 1024×1024, and 300
    .venv/bin/python bench/export.py --cases 600 --size 512

Seeds a scratch SQLite database and media folder (in a temporary folder, removed afterwards):
cases with 8-bit display PNGs and accepted masks at the working resolution, drawn from a pool
of distinct generated images so seeding stays quick. Each export then runs in a fresh process
(all formats: QaTa layout, COCO RLE, manifests, card, SHA256SUMS) and reports wall time, zip
size, MB/s of zip written, the peak of Python/NumPy allocations (tracemalloc) and the peak
resident memory. The last line is the ratio of peak memory at N to peak memory at N/10: close
to 1 when memory does not grow with the dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cases", type=int, default=3000)
    p.add_argument("--size", type=int, default=1024, help="image side in pixels")
    p.add_argument("--pool", type=int, default=48, help="distinct generated images")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # dataset name, in the child process
    return p.parse_args()


def _django(var_dir: Path) -> None:
    os.environ["COLLABMASK_VAR_DIR"] = str(var_dir)
    os.environ["MEDIA_ROOT"] = str(var_dir / "media")
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def _image(size: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    lungs = np.exp(-(((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    lungs += np.exp(-(((xx - 0.7) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    image = 170 - 110 * lungs + 25 * yy + rng.normal(0, 7, (size, size))
    mask = (((xx - rng.uniform(0.2, 0.4)) / 0.1) ** 2 + ((yy - 0.55) / 0.18) ** 2) <= 1
    return np.clip(image, 0, 255).astype(np.uint8), mask


def seed(*, name: str, cases: int, size: int, pool: int) -> None:
    import hashlib

    from annotation.models import Dataset, GroundTruth, Mask, Radiograph
    from annotation.storage import DISPLAY, MASKS, blob_write, content_path
    from cxrio.images import encode_png
    from cxrio.masks import mask_to_png, pixel_sha256

    images = []
    for i in range(min(pool, cases)):
        pixels, mask = _image(size, i)
        png = encode_png(pixels)
        display = content_path(DISPLAY, hashlib.sha256(png).hexdigest(), "png")
        blob_write(display, png)
        mask_path = content_path(MASKS, pixel_sha256(mask), "png")
        blob_write(mask_path, mask_to_png(mask))
        images.append((display, mask_path, pixel_sha256(mask), int(mask.sum())))
    dataset = Dataset.objects.create(name=name, mask_max_side=size)
    rows = [
        Radiograph(
            dataset=dataset,
            name=f"case-{i:05d}.png",
            sha256=hashlib.sha256(f"{name}:{i}".encode()).hexdigest(),
            original=images[i % len(images)][0],
            display=images[i % len(images)][0],
            source_format="png",
            width=size,
            height=size,
            bit_depth=8,
            work_width=size,
            work_height=size,
            patient_key=f"patient-{i // 2}",
        )
        for i in range(cases)
    ]
    Radiograph.objects.bulk_create(rows, batch_size=500)
    rows = list(dataset.radiographs.order_by("id"))
    masks = [
        Mask(
            radiograph=r,
            kind="manual",
            png=images[i % len(images)][1],
            pixel_sha256=images[i % len(images)][2],
            width=size,
            height=size,
            area=images[i % len(images)][3],
        )  # fmt: skip
        for i, r in enumerate(rows)
    ]
    Mask.objects.bulk_create(masks, batch_size=500)
    GroundTruth.objects.bulk_create(
        [
            GroundTruth(radiograph=r, mask=m, source="manual", method="imported")
            for r, m in zip(rows, masks, strict=True)
        ],
        batch_size=500,
    )


def measure(name: str) -> dict:
    """In a fresh process: one export with every format, timed and traced."""
    import tracemalloc

    from annotation.models import Dataset
    from annotation.services.exports import export_build, export_request

    dataset = Dataset.objects.get(name=name)
    export = export_request(dataset=dataset, created_by=None, enqueue=False)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    result = export_build(export=export)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "cases": result["n_cases"],
        "seconds": seconds,
        "bytes": result["size"],
        "peak_traced": peak,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "baseline_rss_kb": baseline_rss,
    }


def main() -> None:
    args = parse_args()
    if args.measure:
        _django(Path(os.environ["COLLABMASK_VAR_DIR"]))
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory(prefix="collabmask-bench-export-") as tmp:
        var = Path(tmp)
        _django(var)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        small = max(1, args.cases // 10)
        print(f"seeding {args.cases} + {small} cases at {args.size}×{args.size} …", flush=True)
        for name, n in (("small", small), ("large", args.cases)):
            seed(name=name, cases=n, size=args.size, pool=args.pool)
        runs = {}
        for name in ("small", "large"):
            child = subprocess.run(
                [sys.executable, __file__, "--measure", name],
                env=os.environ.copy(), capture_output=True, text=True, check=False,
            )  # fmt: skip
            if child.returncode != 0:
                sys.exit(child.stderr)
            runs[name] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"{'cases':>6} {'seconds':>8} {'zip MB':>8} {'MB/s':>7} {'cases/s':>8} "
          f"{'peak traced MB':>15} {'peak RSS MB':>12}")  # fmt: skip
    for run in runs.values():
        mb = run["bytes"] / 1e6
        print(
            f"{run['cases']:>6} {run['seconds']:>8.1f} {mb:>8.1f} {mb / run['seconds']:>7.1f} "
            f"{run['cases'] / run['seconds']:>8.1f} {run['peak_traced'] / 1e6:>15.1f} "
            f"{run['peak_rss_kb'] / 1024:>12.1f}"
        )
    ratio = runs["large"]["peak_traced"] / runs["small"]["peak_traced"]
    rss = runs["large"]["peak_rss_kb"] / runs["small"]["peak_rss_kb"]
    print(
        f"peak memory, {runs['large']['cases']} cases vs {runs['small']['cases']}: "
        f"traced ×{ratio:.2f}, RSS ×{rss:.2f} (1.00 = does not grow with the dataset)"
    )


if __name__ == "__main__":
    main()
