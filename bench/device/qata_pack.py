"""The QaTa-COV19 train/valid splits packed small enough to travel to the device machine.

Only the checkout travels there (64 MiB in all, shared/ data stays behind), and the 7,962
PNGs take 188 MiB. The pack keeps the validation images exact (their original PNG bytes,
30 MiB), so the device scores the very pixels `python -m mlworker evaluate` scores here,
and stores the training images as WebP (quality 80 by default: about 3 KB each, PSNR about
40 dB, well under the radiographs' own noise; augmentation perturbs them more). Masks are
bit-packed and deflated (about 2 MiB for all of them).

    .venv/bin/python bench/device/qata_pack.py var/qata-pack        # writes the pack, ~1 min
    read_pack(Path("var/qata-pack"), "train")                        # names, images, masks

Files: PACK/pack.json, PACK/<split>.names.txt, <split>.blob (encoded images back to back),
<split>.offsets.npy, <split>.masks.npz. No Keras, no Django: numpy and Pillow only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPLITS = ("train", "valid")
SIZE = 224
TRAVEL_LIMIT = 64 * 2**20


def _encode(path: Path, codec: str, quality: int) -> bytes:
    if codec == "png":
        return path.read_bytes()  # the original file, byte for byte
    with Image.open(path) as image:
        buffer = io.BytesIO()
        image.convert("L").save(buffer, format=codec.upper(), quality=quality)
        return buffer.getvalue()


def write_pack(
    root: Path, out: Path, *, train_codec: str = "webp", quality: int = 80, workers: int = 2
) -> dict:
    """Packs ROOT/Train Set with ROOT/splits/{train,valid}.txt into OUT (new or empty)."""
    from bench.common import qata_train_folder
    from cxrio import qata
    from mlworker.data import read_mask

    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    folder = qata_train_folder(root)
    info: dict = {"source": str(root), "size": SIZE, "splits": {}}
    for split in SPLITS:
        names = [n.strip() for n in (root / "splits" / f"{split}.txt").read_text().split() if n]
        codec = train_codec if split == "train" else "png"
        with ThreadPoolExecutor(workers) as pool:
            blobs = list(
                pool.map(lambda n, c=codec: _encode(folder / qata.IMAGES / n, c, quality), names)
            )
            masks = list(
                pool.map(
                    lambda n: read_mask(
                        folder / qata.GROUND_TRUTHS / qata.mask_name(n), (SIZE, SIZE)
                    ),
                    names,
                )
            )
        offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        (out / f"{split}.blob").write_bytes(b"".join(blobs))
        np.save(out / f"{split}.offsets.npy", offsets)
        np.savez_compressed(out / f"{split}.masks.npz", bits=np.packbits(np.stack(masks), axis=-1))
        (out / f"{split}.names.txt").write_text("\n".join(names) + "\n")
        info["splits"][split] = {"images": len(names), "codec": codec, "quality": quality}
    (out / "pack.json").write_text(json.dumps(info, indent=1))
    info["bytes"] = sum(p.stat().st_size for p in out.iterdir())
    return info


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("L")
        if image.size != (SIZE, SIZE):
            image = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def read_pack(
    pack: Path, split: str, *, limit: int | None = None, seed: int = 0, workers: int = 8
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, images uint8 (N, 224, 224), masks bool) of one split; `limit` draws a seeded
    subset (the same draw as bench.common.subset on the split's names)."""
    from bench.common import subset

    names = (pack / f"{split}.names.txt").read_text().split()
    keep = subset(range(len(names)), limit, seed=seed)
    offsets = np.load(pack / f"{split}.offsets.npy")
    blob = (pack / f"{split}.blob").read_bytes()
    with ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(lambda i: _decode(blob[offsets[i] : offsets[i + 1]]), keep))
    bits = np.load(pack / f"{split}.masks.npz")["bits"][keep]
    masks = np.unpackbits(bits, axis=-1, count=SIZE).astype(bool)
    return [names[i] for i in keep], np.stack(images), masks


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "out", type=Path, help="a new folder inside the checkout, ignored by git (var/...)"
    )
    p.add_argument("--data", type=Path, default=None, help="QaTa-COV19 copy (default: shared data)")
    p.add_argument("--codec", default="webp", choices=("webp", "jpeg", "png"))
    p.add_argument("--quality", type=int, default=80)
    args = p.parse_args()
    from bench.common import QATA_ROOT

    started = time.perf_counter()
    info = write_pack(
        args.data or QATA_ROOT, args.out, train_codec=args.codec, quality=args.quality
    )
    mib = info["bytes"] / 2**20
    print(
        f"wrote {args.out}: {mib:.1f} MiB in {time.perf_counter() - started:.0f} s", file=sys.stderr
    )
    if info["bytes"] > TRAVEL_LIMIT - 8 * 2**20:
        print(
            f"warning: {mib:.1f} MiB leaves little of the device tool's 64 MiB for the checkout",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
