import json

import pytest
from PIL import Image

from ecanet.classification.config import resolve
from ecanet.cli import main
from ecanet.studies.ablation import ablate_k


@pytest.mark.slow
def test_ablate_k_one_row_per_setting(image_data, tmp_path, capsys):
    out = tmp_path / "abl"
    args = ["ablate-k", "--data", str(image_data), "--model", "resnet20", "--ks", "3", "5", "--seeds", "0", "1"]
    args += ["--epochs", "1", "--image-size", "16", "--batch-size", "8", "--workers", "0", "--output", str(out)]
    assert main(args) == 0
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["k=3", "k=5", "adaptive", "SE", "none"]
    assert [r["model"] for r in rows] == ["eca_resnet20"] * 3 + ["se_resnet20", "resnet20"]
    for r in rows:  # each value is its run's final top-1, and mean / std are those of the per-seed values
        label = r["label"]
        finals = [json.loads((out / label / f"seed{s}" / "summary.json").read_text())["final_top1"] for s in (0, 1)]
        assert r["finals"] == finals and r["seeds"] == [0, 1]
        assert r["final_mean"] == pytest.approx((finals[0] + finals[1]) / 2)
        assert r["final_sd"] == pytest.approx(abs(finals[0] - finals[1]) / 2**0.5)  # sample std of two values
    k5 = json.loads((out / "k=5" / "seed1" / "config.json").read_text())
    assert k5["eca_k"] == [5, 5, 5] and k5["seed"] == 1
    with Image.open(out / "ablate_k.png") as im:
        im.verify()
    assert "k=5" in capsys.readouterr().out


def test_ablate_k_wants_the_plain_backbone(tmp_path):
    with pytest.raises(ValueError, match="--model: give the backbone without attention"):
        ablate_k(resolve(model="eca_resnet20", output=str(tmp_path)), [3], [0])
