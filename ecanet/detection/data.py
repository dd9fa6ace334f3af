"""COCO-format data for detection and instance segmentation: an images folder plus an instances JSON with
boxes and polygon or RLE masks, checked on load; and the conversion of instance-mask PNG folders to it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError, require
from ..images import IMAGE_SUFFIXES, load_rgb
from ..training.config import read_json

mask_utils = require("pycocotools.mask", "detection")
COCO = require("pycocotools.coco", "detection").COCO

log = logging.getLogger("ecanet")


def load_coco(annotations: str | Path):
    """pycocotools' COCO index of ``annotations``; corrupt JSON gets one line naming the file."""
    path = Path(annotations)
    data = read_json(path, "--annotations", DataError)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"--annotations: {path}: no {key!r} list (not a COCO instances file)")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class CocoDetection(Dataset):
    """Images and targets (``boxes`` xyxy, ``labels`` 1..K, ``masks``, ``image_id``) for torchvision detectors.

    Category ids are mapped to contiguous labels 1..K (``label_to_category`` maps back for evaluation);
    boxes are clipped to the image and empty ones dropped, with a count in the log; images without
    annotations stay, as negatives. Annotations that point at missing images are an error.
    """

    def __init__(self, images: str | Path, annotations: str | Path, masks: bool = False) -> None:
        self.root = Path(images)
        if not self.root.is_dir():
            raise DataError(f"--images: {self.root} is not a folder")
        self.coco = load_coco(annotations)
        self.ids = sorted(self.coco.imgs)
        missing = [
            self.coco.imgs[i]["file_name"]
            for i in self.ids
            if not (self.root / self.coco.imgs[i]["file_name"]).is_file()
        ]
        if missing:
            raise DataError(f"{annotations}: {len(missing)} images listed but not in {self.root}, e.g. {missing[0]}")
        categories = sorted(self.coco.cats)
        self.category_to_label = {c: i + 1 for i, c in enumerate(categories)}
        self.label_to_category = {i + 1: c for i, c in enumerate(categories)}
        self.classes = [self.coco.cats[c]["name"] for c in categories]
        self.masks = masks
        anns = [(a, self.coco.imgs[i]) for i in self.ids for a in self.coco.imgToAnns[i]]
        boxes = [(a["bbox"], self._box(a, info)) for a, info in anns]
        self.dropped = sum(1 for _, b in boxes if b is None)
        self.clipped = sum(1 for (x, y, w, h), b in boxes if b is not None and b != [x, y, x + w, y + h])
        if self.dropped or self.clipped:
            log.warning(
                "%s: %d boxes clipped to their image, %d of zero or negative size dropped",
                annotations,
                self.clipped,
                self.dropped,
            )

    @staticmethod
    def _box(ann: dict, info: dict) -> list[float] | None:
        x, y, w, h = ann["bbox"]
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, info["width"]), min(y + h, info["height"])
        return [x0, y0, x1, y1] if x1 > x0 and y1 > y0 else None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = load_rgb(str(self.root / info["file_name"]))
        if image.size != (info["width"], info["height"]):
            raise DataError(
                f"{info['file_name']}: image is {image.size[0]}x{image.size[1]}, annotations say {info['width']}x{info['height']}"
            )
        kept = [(a, b) for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0) and (b := self._box(a, info))]
        target = {
            "boxes": torch.tensor([b for _, b in kept], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([self.category_to_label[a["category_id"]] for a, _ in kept], dtype=torch.int64),
            "image_id": image_id,
        }
        if self.masks:
            masks = [self.coco.annToMask(a) for a, _ in kept]
            target["masks"] = (
                torch.from_numpy(np.stack(masks))
                if masks
                else torch.zeros(0, info["height"], info["width"], dtype=torch.uint8)
            )
        return TF.to_dtype(TF.to_image(image), torch.float32, scale=True), target


def collate(batch: list) -> tuple[list, list]:
    return tuple(zip(*batch))


def convert_masks(images: str | Path, masks: str | Path, output: str | Path, category: str = "object") -> dict:
    """A folder of images plus instance-mask images (0 background, 1..N instances; matched by stem, with or
    without a ``_mask`` suffix) as a COCO instances JSON with boxes, RLE masks and areas."""
    images, masks = Path(images), Path(masks)
    for flag, folder in (("--images", images), ("--masks", masks)):
        if not folder.is_dir():
            raise DataError(f"{flag}: {folder} is not a folder")
    by_stem = {p.stem.removesuffix("_mask"): p for p in masks.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"--images: {images} holds no images")
    unmatched = [p.name for p in files if p.stem not in by_stem]
    if unmatched:
        raise DataError(f"--masks: no mask in {masks} for {len(unmatched)} images, e.g. {unmatched[0]}")
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": category}]}
    for image_id, path in enumerate(files, start=1):
        with Image.open(path) as im:
            width, height = im.size
        with Image.open(by_stem[path.stem]) as m:
            labels = np.array(m)
        if labels.shape[:2] != (height, width):
            raise DataError(
                f"{by_stem[path.stem]}: mask is {labels.shape[1]}x{labels.shape[0]}, image {path.name} is {width}x{height}"
            )
        if labels.ndim == 3:
            labels = labels[..., 0]
        coco["images"].append({"id": image_id, "file_name": path.name, "width": width, "height": height})
        for instance in np.unique(labels[labels > 0]):
            rle = mask_utils.encode(np.asfortranarray((labels == instance).astype(np.uint8)))
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "area": float(mask_utils.area(rle)),
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                }
            )
    Path(output).write_text(json.dumps(coco))
    return coco
