"""COCO evaluation of a detector with pycocotools: AP, AP50, AP75, APs, APm, APl for boxes (and masks)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.detection import MaskRCNN

from ..errors import require
from .data import CocoDetection, collate

mask_utils = require("pycocotools.mask", "detection")
COCOeval = require("pycocotools.cocoeval", "detection").COCOeval

METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def detections_to_coco(outputs: list[dict], image_ids: list[int], label_to_category: dict[int, int]) -> list[dict]:
    """torchvision detector outputs as COCO result dicts, labels mapped back to the file's category ids."""
    results = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].tolist()
        masks = (out["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8) if "masks" in out else None
        for j, (box, score, label) in enumerate(zip(boxes, out["scores"].tolist(), out["labels"].tolist())):
            x0, y0, x1, y1 = box
            row = {
                "image_id": image_id,
                "category_id": label_to_category[label],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": score,
            }
            if masks is not None:
                rle = mask_utils.encode(np.asfortranarray(masks[j]))
                row["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            results.append(row)
    return results


@torch.no_grad()
def coco_evaluate(model: nn.Module, dataset: CocoDetection, batch_size: int = 2, device: str = "cpu") -> dict:
    """{"bbox": {AP, ...}} (plus "segm" for models that predict masks), in percent."""
    model.eval().to(device)
    results = []
    for images, targets in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        outputs = model([im.to(device) for im in images])
        results += detections_to_coco(outputs, [t["image_id"] for t in targets], dataset.label_to_category)
    kinds = ["bbox"] + (["segm"] if isinstance(model, MaskRCNN) else [])
    metrics = {}
    for kind in kinds:
        if not results:
            metrics[kind] = dict.fromkeys(METRICS, 0.0)
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
            detections = dataset.coco.loadRes(results)
            ev = COCOeval(dataset.coco, detections, kind)
            ev.params.imgIds = dataset.ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics[kind] = {name: max(float(v), 0.0) * 100 for name, v in zip(METRICS, ev.stats[:6])}
    return metrics
