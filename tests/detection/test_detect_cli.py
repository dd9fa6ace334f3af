import json
import math
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import require_extra

require_extra("detection")
from ecanet.cli import main
from tests.helpers import make_coco


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["faster_rcnn", "mask_rcnn"])
def test_detect_train_eval_predict(kind, tmp_path, capsys):
    images, ann = make_coco(tmp_path / "coco")
    out = tmp_path / "run"
    args = [
        "detect",
        "train",
        "--model",
        kind,
        "--backbone",
        "eca_resnet18",
        "--images",
        str(images),
        "--annotations",
        str(ann),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--min-size",
        "64",
        "--max-size",
        "64",
        "--workers",
        "0",
        "--lr",
        "0.01",
        "--output",
        str(out),
        "--trainable-layers",
        "5",
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert ("segm" in summary) == (kind == "mask_rcnn")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(math.isfinite(r["train_loss"]) for r in records)
    for name in ("checkpoint.pt", "final.safetensors", "config.json"):
        assert (out / name).is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "detect",
                "eval",
                "--weights",
                str(out / "final.safetensors"),
                "--images",
                str(images),
                "--annotations",
                str(ann),
                "--batch-size",
                "1",
            ]
        )
        == 0
    )
    reported = json.loads(capsys.readouterr().out)["bbox"]
    pred = tmp_path / "pred"
    assert (
        main(
            [
                "detect",
                "predict",
                *sorted(map(str, images.glob("*.png"))),
                "--weights",
                str(out / "final.safetensors"),
                "--output",
                str(pred),
                "--score-threshold",
                "0",
            ]
        )
        == 0
    )
    with Image.open(pred / "1_pred.png") as im:
        assert im.size == (64, 64)
    rows = json.loads((pred / "detections.json").read_text())
    assert rows[0]["image"].endswith("1.png") and set(rows[0]) == {"image", "boxes", "labels", "scores"}
    assert all(label in ("bright", "dim") for row in rows for label in row["labels"])
    assert_ap_equals_pycocotools_on(rows, ann, reported)


def assert_ap_equals_pycocotools_on(rows: list[dict], ann, reported: dict) -> None:
    """The box AP that ``detect eval`` reported equals pycocotools' own evaluation of the detections that
    ``detect predict`` saved (same weights, same images), converted here by hand."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(ann))
    ids = {c["name"]: c["id"] for c in gt.loadCats(gt.getCatIds())}
    image_ids = {im["file_name"]: im["id"] for im in gt.loadImgs(gt.getImgIds())}
    results = [
        {
            "image_id": image_ids[Path(row["image"]).name],
            "category_id": ids[label],
            "score": score,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
        }
        for row in rows
        for (x0, y0, x1, y1), label, score in zip(row["boxes"], row["labels"], row["scores"])
    ]
    assert results, "the trained detector found nothing"
    ev = COCOeval(gt, gt.loadRes(results), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    expected = [max(float(v), 0.0) * 100 for v in ev.stats[:6]]
    got = [reported[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    assert got == pytest.approx(expected, abs=1e-6)


def test_detect_convert_masks_cli_and_errors(tmp_path, capsys):
    import numpy as np

    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    labels = np.zeros((20, 20), dtype=np.uint8)
    labels[2:8, 2:8], labels[10:18, 10:16] = 1, 2
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(imgs / "p.png")
    Image.fromarray(labels).save(masks / "p_mask.png")
    assert (
        main(
            [
                "detect",
                "convert-masks",
                "--images",
                str(imgs),
                "--masks",
                str(masks),
                "--output",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    assert "1 images, 2 instances" in capsys.readouterr().out
    assert main(["detect", "train", "--images", str(imgs)]) == 2
    assert "--annotations is required" in capsys.readouterr().err
    assert (
        main(
            [
                "detect",
                "eval",
                "--weights",
                str(tmp_path / "c.json"),
                "--images",
                str(imgs),
                "--annotations",
                str(tmp_path / "c.json"),
            ]
        )
        == 2
    )
    assert "c.json: not a PyTorch or safetensors checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_detect_config_round_trip_and_report(tmp_path, capsys):
    images, ann = make_coco(tmp_path / "coco")
    first = tmp_path / "first"
    args = ["detect", "train", "--model", "retinanet", "--backbone", "resnet18", "--images", str(images)]
    args += ["--annotations", str(ann), "--epochs", "1", "--batch-size", "2", "--min-size", "64", "--max-size", "64"]
    args += ["--workers", "0", "--output", str(first), "--milestones", "5", "--lr", "0.001"]
    assert main(args) == 0
    saved = json.loads((first / "config.json").read_text())
    again = tmp_path / "again"
    assert main(["detect", "train", "--config", str(first / "config.json"), "--output", str(again)]) == 0
    reused = json.loads((again / "config.json").read_text())
    assert reused == {**saved, "output": str(again)}  # every detection field came back from the file
    capsys.readouterr()

    assert main(["report", str(again)]) == 0
    page = (again / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1  # the loss and AP curves
    record = json.loads((again / "metrics.jsonl").read_text().splitlines()[0])
    assert "<th>bbox_AP</th>" in page and f"{record['bbox_AP']:.4g}" in page
    assert "retinanet (resnet18)" in page

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model": "x", "nonsense": 1}')
    capsys.readouterr()
    assert main(["report", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "config.json: unknown keys ['nonsense']" in err and "Traceback" not in err
