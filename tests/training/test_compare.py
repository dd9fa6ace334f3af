"""``ecanet compare``: models x seeds through the engine, statistics by hand, resuming a killed
comparison, the stratified validation split and the in-memory dataset."""

import importlib
import json
import math
import statistics

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ecanet.classification.compare import compare
from ecanet.classification.config import resolve
from ecanet.classification.data import ImageFolder, InMemory, collate_skipping, split_folder, train_transform
from ecanet.cli import main
from ecanet.studies.comparison import Arm, format_comparison, mean_sd, paired_interval, summarize
from tests.helpers import COLORS, make_image_folder

engine = importlib.import_module("ecanet.classification.train")  # the module, not the function it exports
runner = importlib.import_module("ecanet.classification.compare")  # where compare calls train
TINY = dict(epochs=1, image_size=16, batch_size=8, workers=0, lr=0.05)


def test_paired_interval_by_hand():
    a, b = [70.0, 72.0, 71.0], [69.0, 70.0, 71.5]
    diffs = [1.0, 2.0, -0.5]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # Student's t, 2 degrees of freedom, 97.5 %
    got = paired_interval(a, b)
    assert got["mean"] == pytest.approx(mean) and got["sd"] == pytest.approx(sd) and got["n"] == 3
    assert (got["low"], got["high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert paired_interval([1.0], [0.5]) == {"mean": 0.5, "sd": 0.0, "low": None, "high": None, "n": 1}
    assert mean_sd([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(statistics.stdev([1.0, 2.0, 4.0])))


def test_summarize_fixed_runs():
    def run(seed, final, best, ips):
        return {"seed": seed, "final_top1": final, "best_top1": best, "params": 10, "macs": 20, "img_per_s": ips}

    runs = {"plain": [run(0, 60.0, 61.0, 100.0), run(1, 62.0, 62.5, 110.0)]}
    runs["eca"] = [run(0, 63.0, 63.0, 90.0), run(1, 62.0, 64.0, 100.0)]
    result = summarize([Arm("plain", "resnet20"), Arm("eca", "eca_resnet20")], runs)
    eca = result["rows"][1]
    assert (eca["final_mean"], eca["final_sd"]) == (62.5, pytest.approx(math.sqrt(0.5)))
    assert (eca["best_mean"], eca["img_per_s"], eca["seeds"]) == (63.5, 95.0, [0, 1])
    pair = result["pairs"][0]
    assert pair["against"] == "plain" and pair["final"]["mean"] == pytest.approx(1.5)  # (3 + 0) / 2
    assert pair["best"]["mean"] == pytest.approx(1.75)
    table = format_comparison(result)
    assert "62.50 +- 0.71" in table and "+1.50 [" in table


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "data" / "train", {c: 10 for c in COLORS}, seed=0).parent


def test_compare_resumes_a_killed_comparison(folder, tmp_path, monkeypatch):
    cfg = resolve(data=str(folder), val_split=0.2, output=str(tmp_path / "cmp"), **TINY)
    arms = [Arm("resnet20", "resnet20"), Arm("eca_resnet20", "eca_resnet20")]
    calls = []
    real = engine.train

    def killed_after_first(run):
        if calls:
            raise KeyboardInterrupt  # the comparison is stopped during its second run
        calls.append(run.output)
        return real(run)

    monkeypatch.setattr(runner, "train", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        compare(cfg, arms, [0, 1])
    first = tmp_path / "cmp" / "resnet20" / "seed0"
    stamp = (first / "final.safetensors").stat().st_mtime_ns
    trained = []
    monkeypatch.setattr(runner, "train", lambda run: trained.append(run.output) or real(run))
    result = compare(cfg, arms, [0, 1])
    assert str(first) not in trained and len(trained) == 3  # the finished run is read, not repeated
    assert (first / "final.safetensors").stat().st_mtime_ns == stamp
    finals = [
        json.loads((tmp_path / "cmp" / "eca_resnet20" / f"seed{s}" / "summary.json").read_text())["final_top1"]
        for s in (0, 1)
    ]
    assert result["rows"][1]["finals"] == finals
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["label"] for r in saved["rows"]] == ["resnet20", "eca_resnet20"] and len(saved["pairs"]) == 1
    with Image.open(tmp_path / "cmp" / "comparison.png") as im:
        im.verify()
    with pytest.raises(ValueError, match="seed0 was trained with epochs=1, not 2: give another --output"):
        compare(
            resolve(data=str(folder), val_split=0.2, output=str(tmp_path / "cmp"), **{**TINY, "epochs": 2}), arms, [0]
        )
    run_cfg = json.loads((tmp_path / "cmp" / "eca_resnet20" / "seed1" / "config.json").read_text())
    assert (run_cfg["seed"], run_cfg["val_split"], run_cfg["split_seed"]) == (1, 0.2, 0)


def test_val_split_is_stratified_and_seeded(folder):
    root = folder / "train"
    train, val = split_folder(root, 0.2, seed=0, image_size=16)
    assert sorted(statistics.multimode(val.targets)) == [0, 1, 2] and len(val) == 6  # 2 of each 10
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples} and len(train) == 24
    again = split_folder(root, 0.2, seed=0, image_size=16)[1]
    other = split_folder(root, 0.2, seed=1, image_size=16)[1]
    assert again.samples == val.samples and other.samples != val.samples
    with pytest.raises(ValueError, match="--val-split must be a fraction in"):
        split_folder(root, 1.5, seed=0, image_size=16)


def test_in_memory_gives_the_folders_batches(folder):
    root = folder / "train"
    on_disk = ImageFolder(root, train_transform(16))
    in_memory = InMemory(ImageFolder(root, train_transform(16)))
    assert in_memory.images[0].dtype == torch.uint8
    batches = []
    for data in (on_disk, in_memory):
        torch.manual_seed(3)
        batches.append(list(DataLoader(data, batch_size=8, shuffle=True, collate_fn=collate_skipping)))
    for (x1, y1, _), (x2, y2, _) in zip(*batches, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.slow
def test_compare_cli_table(folder, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["compare", "--models", "resnet20", "eca_resnet20", "--seeds", "2", "--data", str(folder)]
    argv += ["--val-split", "0.2", "--in-memory", "--epochs", "1", "--image-size", "16", "--batch-size", "8"]
    assert main([*argv, "--workers", "0", "--output", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[0] for line in lines if line.startswith(("resnet20 ", "eca_resnet20 "))]
    assert rows == ["resnet20", "eca_resnet20"] and (out / "eca_resnet20" / "seed1" / "final.safetensors").is_file()
    assert main(["compare", "--models", "resnet20", "nonet", "--output", str(out)]) == 2


def test_budget_minutes_sets_the_epochs(folder, tmp_path):
    from ecanet.training.distributed import Dist
    from ecanet.training.fit import planned_epochs

    assert planned_epochs(1.0, 7.0, Dist()) == 8 and planned_epochs(0.001, 7.0, Dist()) == 1
    out = tmp_path / "budget"

    def run(**extra):
        settings = {**TINY, "epochs": 5, "budget_minutes": 1e-4, **extra}
        return engine.train(
            resolve(model="resnet20", data=str(folder), val_split=0.2, output=str(out), compare=[], **settings)
        )

    assert run()["epochs"] == 1 and len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((out / "config.json").read_text())["epochs"] == 1  # the plan is recorded
    assert run(resume="")["epochs"] == 1  # resuming keeps the planned epochs: nothing left to do
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_compare_refuses_before_training(tmp_path):
    cfg = resolve(output=str(tmp_path / "x"), **TINY)
    with pytest.raises(ValueError, match=r"compare: models appear twice: \['resnet20'\]"):
        compare(cfg, [Arm("resnet20", "resnet20"), Arm("resnet20", "resnet20")], [0])
    with pytest.raises(ValueError, match="compare: give at least one model and one seed"):
        compare(cfg, [Arm("resnet20", "resnet20")], [])
    assert not (tmp_path / "x").exists()


def test_val_split_refusals(folder, tmp_path):
    from ecanet.classification import build_datasets

    with pytest.raises(ValueError, match="--val-dir and --val-split: give one source of validation images"):
        build_datasets(resolve(data=str(folder), val_split=0.2, val_dir=str(folder), image_size=16))
    with pytest.raises(ValueError, match="--val-split 0.05: cannot split .* by class"):
        split_folder(folder / "train", 0.05, seed=0, image_size=16)  # 1.5 images for 3 classes
