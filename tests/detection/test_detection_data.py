import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import require_extra

require_extra("detection")
from ecanet.detection.data import CocoDetection, convert_masks
from ecanet.detection.evaluate import coco_evaluate
from ecanet.errors import DataError
from tests.helpers import add_box

SHAPES = [  # per image: (category id, x, y, w, h); ids are deliberately not contiguous
    [(3, 4, 4, 12, 10), (7, 20, 18, 8, 10)],
    [(7, 2, 6, 20, 14)],
    [],  # an image with no annotation: a negative
]


@pytest.fixture
def coco_dir(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "blob"}]}
    for i, shapes in enumerate(SHAPES, start=1):
        arr = np.zeros((32, 40, 3), dtype=np.uint8)
        for cat, x, y, w, h in shapes:
            arr[y : y + h, x : x + w] = 200 if cat == 3 else 90
            add_box(coco, i, cat, x, y, w, h)
        Image.fromarray(arr).save(images / f"{i}.png")
        coco["images"].append({"id": i, "file_name": f"{i}.png", "width": 40, "height": 32})
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(coco))
    return images, ann, coco


def test_targets_with_contiguous_labels_masks_and_negatives(coco_dir):
    images, ann, _ = coco_dir
    ds = CocoDetection(images, ann, masks=True)
    assert ds.classes == ["square", "blob"] and ds.label_to_category == {1: 3, 2: 7}
    image, target = ds[0]
    assert image.shape == (3, 32, 40)
    assert target["labels"].tolist() == [1, 2]
    assert target["boxes"].tolist() == [[4, 4, 16, 14], [20, 18, 28, 28]]
    assert target["masks"].shape == (2, 32, 40) and target["masks"][0].sum() == 12 * 10
    _, negative = ds[2]
    assert negative["boxes"].shape == (0, 4) and negative["masks"].shape == (0, 32, 40)


def test_boxes_outside_the_image_are_clipped_or_dropped(coco_dir, caplog):
    images, ann, coco = coco_dir
    coco["annotations"][0]["bbox"] = [30, 20, 20, 20]  # runs past the right and bottom edges: clipped
    coco["annotations"][1]["bbox"] = [10, 10, 0, 5]  # zero width: dropped
    ann.write_text(json.dumps(coco))
    with caplog.at_level("WARNING", logger="ecanet"):
        ds = CocoDetection(images, ann)
    assert "1 boxes clipped to their image, 1 of zero or negative size dropped" in caplog.text
    assert ds[0][1]["boxes"].tolist() == [[30, 20, 40, 32]]


def test_bad_annotation_files(coco_dir, tmp_path):
    images, ann, coco = coco_dir
    coco["images"].append({"id": 9, "file_name": "gone.png", "width": 40, "height": 32})
    bad = tmp_path / "missing.json"
    bad.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"missing\.json: 1 images listed but not in .*images, e.g. gone\.png"):
        CocoDetection(images, bad)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DataError, match=r"--annotations: .*broken\.json: not valid JSON"):
        CocoDetection(images, broken)
    with pytest.raises(DataError, match=r"--annotations: .*absent\.json: no such file"):
        CocoDetection(images, tmp_path / "absent.json")
    not_coco = tmp_path / "list.json"
    not_coco.write_text('{"images": []}')
    with pytest.raises(DataError, match=r"list\.json: no 'annotations' list \(not a COCO instances file\)"):
        CocoDetection(images, not_coco)


class Oracle(torch.nn.Module):
    """Returns the ground truth as detections (score 1): a perfect detector, whatever the labels' mapping."""

    def __init__(self, dataset):
        super().__init__()
        self.targets = [dataset[i][1] for i in range(len(dataset))]
        self.calls = 0

    def forward(self, images):
        out = [
            {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}
            for t in self.targets[self.calls : self.calls + len(images)]
        ]
        self.calls += len(images)
        return out


def test_coco_evaluation_of_a_perfect_detector(coco_dir):
    images, ann, _ = coco_dir
    ds = CocoDetection(images, ann)
    metrics = coco_evaluate(Oracle(ds), ds, batch_size=2)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0) and metrics["bbox"]["AP50"] == pytest.approx(100.0)
    assert set(metrics["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}


def test_convert_masks_round_trip(tmp_path):
    images, masks = tmp_path / "imgs", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    truth = {}
    for name in ("a", "b"):
        labels = np.zeros((24, 30), dtype=np.uint8)
        labels[2:10, 3:12] = 1
        labels[12:20, 15:28] = 2
        Image.fromarray(np.full((24, 30, 3), 128, dtype=np.uint8)).save(images / f"{name}.png")
        Image.fromarray(labels).save(masks / (f"{name}_mask.png" if name == "a" else f"{name}.png"))
        truth[name] = labels
    out = tmp_path / "coco.json"
    convert_masks(images, masks, out)
    ds = CocoDetection(images, out, masks=True)
    for i, name in enumerate(("a", "b")):
        _, target = ds[i]
        assert target["boxes"].tolist() == [[3, 2, 12, 10], [15, 12, 28, 20]]
        for k, instance in enumerate((1, 2)):
            assert torch.equal(target["masks"][k], torch.from_numpy((truth[name] == instance).astype(np.uint8)))
    assert json.loads(out.read_text())["annotations"][0]["area"] == 8 * 9


def test_convert_masks_errors(tmp_path):
    images, masks = tmp_path / "imgs", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(images / "x.png")
    with pytest.raises(DataError, match=r"--masks: no mask in .* for 1 images, e.g. x\.png"):
        convert_masks(images, masks, tmp_path / "o.json")
    Image.fromarray(np.zeros((12, 10), dtype=np.uint8)).save(masks / "x_mask.png")
    with pytest.raises(DataError, match=r"x_mask\.png: mask is 10x12, image x\.png is 10x10"):
        convert_masks(images, masks, tmp_path / "o.json")
