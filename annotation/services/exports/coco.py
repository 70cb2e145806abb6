"""COCO instances JSON with RLE masks, written without holding the dataset in memory.

One image entry per case and, for a non-empty mask, one annotation: the whole infection mask
of the case at the image's full size, as compressed RLE from pycocotools (iscrowd 0). Images
and annotations are spooled to two temporary files as cases go by; the JSON document is then
streamed into the zip from the spools.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
from pycocotools import mask as cocomask

CATEGORY_ID = 1
LICENCE_ID = 1
_CHUNK = 1 << 20


def rle_of(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of a boolean mask, JSON-ready (counts as text)."""
    rle = cocomask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


class CocoWriter:
    def __init__(
        self, *, spool_dir: str, description: str, created: datetime, licence: str = ""
    ) -> None:
        self._images = tempfile.TemporaryFile(mode="w+", encoding="utf-8", dir=spool_dir)  # noqa: SIM115 - closed in close()
        self._annotations = tempfile.TemporaryFile(mode="w+", encoding="utf-8", dir=spool_dir)  # noqa: SIM115 - closed in close()
        self._n_images = self._n_annotations = 0
        self._head = {
            "info": {
                "description": description,
                "version": "1.0",
                "year": created.year,
                "contributor": "collabmask",
                "date_created": created.isoformat(),
            },
            "licenses": [_licence_entry(licence)] if licence else [],
            "categories": [{"id": CATEGORY_ID, "name": "infection", "supercategory": "covid-19"}],
        }

    def add(self, *, image_id: int, file_name: str, mask: np.ndarray, extra: dict) -> None:
        height, width = mask.shape
        image = {"id": image_id, "file_name": file_name, "width": width, "height": height}
        if self._head["licenses"]:
            image["license"] = LICENCE_ID
        self._append(self._images, self._n_images, {**image, **extra})
        self._n_images += 1
        if not mask.any():
            return  # a control case: listed as an image, with no annotation
        rle = rle_of(mask)
        annotation = {
            "id": self._n_annotations + 1,
            "image_id": image_id,
            "category_id": CATEGORY_ID,
            "segmentation": rle,
            "area": float(cocomask.area(_raw(rle))),
            "bbox": [float(v) for v in cocomask.toBbox(_raw(rle))],
            "iscrowd": 0,
        }
        self._append(self._annotations, self._n_annotations, annotation)
        self._n_annotations += 1

    @staticmethod
    def _append(spool, count: int, item: dict) -> None:
        spool.write((",\n" if count else "\n") + json.dumps(item, separators=(",", ":")))

    def chunks(self) -> Iterator[bytes]:
        """The JSON document, in pieces."""
        head = json.dumps(self._head, indent=1)[:-2]  # drop the closing "\n}"
        yield (head + ',\n "images": [').encode()
        yield from _spooled(self._images)
        yield b'\n ],\n "annotations": ['
        yield from _spooled(self._annotations)
        yield b"\n ]\n}\n"

    def close(self) -> None:
        self._images.close()
        self._annotations.close()


def _licence_entry(licence: str) -> dict[str, Any]:
    """COCO's licence record: the name as given, and the URL when the licence is one."""
    url = licence if licence.startswith(("http://", "https://")) else ""
    return {"id": LICENCE_ID, "name": licence, "url": url}


def _raw(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": rle["size"], "counts": rle["counts"].encode()}


def _spooled(spool) -> Iterator[bytes]:
    spool.seek(0)
    for chunk in iter(lambda: spool.read(_CHUNK), ""):
        yield chunk.encode("utf-8")
