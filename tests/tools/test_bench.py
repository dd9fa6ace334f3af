import importlib.util
import json

import pytest
import torch
from PIL import Image

from ecanet import ECA
from ecanet.cli import main
from ecanet.errors import MissingExtraError
from ecanet.studies.bench import _paired_ratio, build
from tests.helpers import require_extra

KEYS = {
    "model",
    "params",
    "macs",
    "infer_img_s",
    "train_img_s",
    "train_peak_mem_mb",
    "infer_ratio",
    "train_ratio",
    "mem_ratio",
}


@pytest.mark.slow
def test_bench_tiny_models_writes_json_and_png(tmp_path, capsys):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["bench", "--models", "resnet20", "eca_resnet20", "eca_resnet20:plain", "--batch-size", "2"]
    args += ["--image-size", "32", "--repeats", "2", "--warmup", "1", "--threads", "1"]
    assert main(args + ["--json", str(out_json), "--plot", str(out_png)]) == 0
    rows = json.loads(out_json.read_text())
    assert [r["model"] for r in rows] == ["resnet20", "eca_resnet20", "eca_resnet20:plain"]
    for row in rows:
        assert KEYS <= set(row)
        assert row["infer_img_s"] > 0 and row["train_img_s"] > 0 and row["train_peak_mem_mb"] > 0
        assert row["infer_img_s_min"] <= row["infer_img_s"] <= row["infer_img_s_max"]
    assert rows[0]["infer_ratio"] == rows[0]["train_ratio"] == rows[0]["mem_ratio"] == 1.0
    for key in ("infer", "train"):  # a paired ratio lies within the ratios of the extremes
        lo = rows[1][f"{key}_img_s_min"] / rows[0][f"{key}_img_s_max"]
        hi = rows[1][f"{key}_img_s_max"] / rows[0][f"{key}_img_s_min"]
        assert lo <= rows[1][f"{key}_ratio"] <= hi
    assert rows[1]["params"] - rows[0]["params"] == 9 * 3  # nine blocks, k = 3
    with Image.open(out_png) as im:
        im.verify()
    assert "eca_resnet20:plain" in capsys.readouterr().out


def test_bench_inference_only_runs_no_training_step(tmp_path, capsys, monkeypatch):
    from ecanet.studies.bench import Runner

    def no_training(self):
        raise AssertionError("a training step ran")

    monkeypatch.setattr(Runner, "train", no_training)
    out_json = tmp_path / "bench.json"
    args = ["bench", "--models", "resnet20", "eca_resnet20", "--batch-size", "2", "--image-size", "32"]
    args += ["--repeats", "3", "--warmup", "1", "--threads", "1", "--inference-only", "--json", str(out_json)]
    assert main(args) == 0
    rows = json.loads(out_json.read_text())
    assert [r["model"] for r in rows] == ["resnet20", "eca_resnet20"]
    for row in rows:
        assert KEYS <= set(row) and row["infer_img_s"] > 0
        assert row["train_img_s"] is row["train_ratio"] is row["train_peak_mem_mb"] is row["mem_ratio"] is None
    assert rows[0]["infer_ratio"] == 1.0 and rows[1]["infer_ratio"] > 0
    assert "inference only" in capsys.readouterr().out


def test_ratio_is_median_of_paired_ratios():
    # repeat by repeat 3x, 1x, 2x: the paired median is 2, though the medians of the series are equal
    assert _paired_ratio([3.0, 4.0, 10.0], [1.0, 4.0, 5.0]) == 2.0


def test_bench_specs():
    assert not build("eca_resnet20:plain").layer1[0].fused
    assert build("eca_resnet20").layer1[0].fused
    if importlib.util.find_spec("timm") is not None:  # the "timm" extra
        assert type(build("timm:eca_resnet50")).__module__.startswith("timm")
    else:
        with pytest.raises(MissingExtraError, match='needs the "timm" extra'):
            build("timm:eca_resnet50")
    with pytest.raises(ValueError, match="unknown model variant 'eca_resnet20:fast'"):
        build("eca_resnet20:fast")


def test_bench_bad_model_is_one_line_error(capsys):
    assert main(["bench", "--models", "eca_resnet5", "--no-memory", "--repeats", "1"]) == 2
    assert "unknown model 'eca_resnet5'" in capsys.readouterr().err


def test_bench_memory_is_smallest_peak_over_fresh_processes(monkeypatch):
    from ecanet.studies import bench

    peaks = {"resnet20": iter([120.0, 100.0, 110.0]), "eca_resnet20": iter([90.0, 95.0, 99.0])}
    calls = []

    def fake_memory(spec, cfg):
        calls.append(spec)
        return next(peaks[spec])

    monkeypatch.setattr(bench, "_memory_in_subprocess", fake_memory)
    cfg = bench.BenchConfig(["resnet20", "eca_resnet20"], batch_size=2, image_size=32, repeats=1, warmup=0)
    cfg.memory_repeats = 3
    rows = bench.run_bench(cfg, log=lambda msg: None)
    assert calls == ["resnet20"] * 3 + ["eca_resnet20"] * 3
    assert [r["train_peak_mem_mb"] for r in rows] == [100.0, 90.0]
    assert rows[1]["mem_ratio"] == 0.9


def test_bench_control_is_the_first_model_again(tmp_path, monkeypatch):
    """--control adds a separately built instance of the first model, timed like the others and measured
    for memory as the first model (its spec, not its label)."""
    from ecanet.studies import bench

    memory_specs = []
    monkeypatch.setattr(bench, "_memory_in_subprocess", lambda spec, cfg: memory_specs.append(spec) or 100.0)
    built = []
    real_runner_init = bench.Runner.__init__

    def recording_init(self, spec, cfg):
        real_runner_init(self, spec, cfg)
        built.append(self.model)

    monkeypatch.setattr(bench.Runner, "__init__", recording_init)
    out_json = tmp_path / "bench.json"
    args = ["bench", "--models", "resnet20", "eca_resnet20", "--control", "--batch-size", "2", "--image-size", "32"]
    assert main(args + ["--repeats", "2", "--warmup", "1", "--threads", "1", "--json", str(out_json)]) == 0
    rows = json.loads(out_json.read_text())
    assert [r["model"] for r in rows] == ["resnet20", "eca_resnet20", "resnet20 (control)"]
    assert memory_specs == ["resnet20", "eca_resnet20", "resnet20"]
    control = rows[2]
    assert control["params"] == rows[0]["params"] and control["mem_ratio"] == 1.0
    assert control["infer_img_s"] > 0 and control["infer_ratio"] > 0 and control["train_ratio"] > 0
    assert built[2] is not built[0] and type(built[2]) is type(built[0])


@pytest.mark.parametrize("flag", ["--repeats", "--memory-repeats", "--batch-size"])
def test_bench_counts_must_be_positive(flag, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--models", "resnet20", flag, "0"])
    assert f"argument {flag}: expected a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_bench_repeat_seconds_must_be_a_number_at_least_zero(value, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--models", "resnet20", "--repeat-seconds", value])
    assert f"argument --repeat-seconds: expected a number >= 0, got {value!r}" in capsys.readouterr().err


def test_zoo_twins_run_the_fused_tail_and_tv_specs_build_torchvision_models():
    """Every zoo model runs the fused tail on a CPU, the attention-free twin too (like with like); ``tv:`` is
    torchvision's own model, the reference row."""
    import torchvision

    from ecanet.layers.fused import fast_path_applies

    block = build("resnet20").layer1[0]
    x = torch.empty(1, 16, 8, 8)
    assert block.fused and fast_path_applies(block.fused, None, block.bn2, x, block.fused_devices)
    assert type(build("tv:resnet18")) is torchvision.models.ResNet
    assert type(build("tv:mobilenet_v2")) is torchvision.models.MobileNetV2
    with pytest.raises(ValueError, match="unknown model 'tv:resnet5': torchvision has no classification model"):
        build("tv:resnet5")
    swapped = build("tv:mobilenet_v3_small+replace_se", num_classes=10)
    assert sum(isinstance(m, ECA) for m in swapped.modules()) == 9 and swapped.config["adapt"][0]["op"] == "replace_se"
    assert sum(isinstance(m, ECA) for m in build("tv:resnet18+attach_eca").modules()) == 8
    with pytest.raises(ValueError, match=r"unknown adaptation 'eca' in tv:resnet18\+eca; use \+replace_se"):
        build("tv:resnet18+eca")


@pytest.mark.slow
def test_bench_suite_runs_every_family_against_its_twin(tmp_path, capsys):
    out_json, out_png = tmp_path / "suite.json", tmp_path / "suite.png"
    args = ["bench", "--suite", "zoo", "--families", "resnet20", "mobilenet_v2", "--image-size", "32"]
    args += ["--batch-size", "2", "--repeats", "1", "--warmup", "0", "--threads", "1", "--no-memory"]
    assert main(args + ["--json", str(out_json), "--plot", str(out_png)]) == 0
    rows = json.loads(out_json.read_text())
    assert [(r["family"], r["model"]) for r in rows] == [
        ("resnet20", "resnet20"),
        ("resnet20", "se_resnet20"),
        ("resnet20", "eca_resnet20"),
        ("mobilenet_v2", "mobilenet_v2"),
        ("mobilenet_v2", "se_mobilenet_v2"),
        ("mobilenet_v2", "eca_mobilenet_v2"),
        ("mobilenet_v2", "tv:mobilenet_v2"),
    ]
    for row in rows:
        assert KEYS <= set(row) and row["image_size"] == 32 and row["batch_size"] == 2
        assert row["infer_ratio"] > 0 and row["train_ratio"] > 0
    assert rows[0]["infer_ratio"] == rows[3]["infer_ratio"] == 1.0  # each family against its own twin
    assert rows[6]["params"] == rows[3]["params"]  # torchvision's MobileNetV2 is the twin's architecture
    with Image.open(out_png) as im:
        im.verify()
    out = capsys.readouterr().out
    assert "family" in out and "tv:mobilenet_v2" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag,axis,values", [("--batch-sizes", "batch_size", [1, 3]), ("--image-sizes", "image_size", [16, 32])]
)
def test_bench_sweep_runs_the_pair_at_every_size(tmp_path, flag, axis, values):
    out_json, out_png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    args = ["bench", "--models", "resnet20", "eca_resnet20", flag, *map(str, values), "--image-size", "32"]
    args += ["--batch-size", "2", "--repeats", "1", "--warmup", "0", "--threads", "1", "--no-memory"]
    assert main(args + ["--json", str(out_json), "--plot", str(out_png)]) == 0
    rows = json.loads(out_json.read_text())
    assert [(r[axis], r["model"]) for r in rows] == [(v, m) for v in values for m in ("resnet20", "eca_resnet20")]
    other = {"batch_size": "image_size", "image_size": "batch_size"}[axis]
    assert {r[other] for r in rows} == {32 if other == "image_size" else 2}
    assert [r["infer_ratio"] for r in rows[::2]] == [1.0, 1.0]
    with Image.open(out_png) as im:
        im.verify()


def test_bench_onnx_runtime_rows_time_inference_only(tmp_path):
    require_extra("export")
    out_json = tmp_path / "ort.json"
    args = ["bench", "--models", "ort:resnet20", "ort:eca_resnet20", "--batch-size", "1", "--image-size", "32"]
    assert main(args + ["--repeats", "2", "--warmup", "1", "--threads", "1", "--json", str(out_json)]) == 0
    rows = json.loads(out_json.read_text())
    assert [r["model"] for r in rows] == ["ort:resnet20", "ort:eca_resnet20"]
    assert rows[1]["params"] - rows[0]["params"] == 27
    for row in rows:
        assert row["infer_img_s"] > 0 and row["infer_ratio"] > 0
        assert row["train_img_s"] is row["train_ratio"] is row["train_peak_mem_mb"] is None


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--suite", "zoo", "--batch-sizes", "1", "2"], "--suite and --batch-sizes cannot be combined"),
        (["--batch-sizes", "1", "--image-sizes", "32"], "--batch-sizes and --image-sizes cannot be combined"),
        (["--families", "resnet20"], "--families needs --suite"),
        (["--suite", "zoo", "--families", "resnet21"], "--families: unknown resnet21; choose from resnet18"),
        (["--suite", "zoo", "--models", "resnet20"], "--suite chooses the models itself"),
        (["--models", "ort:resnet20", "--compile"], "ort:resnet20: ONNX Runtime rows run on the CPU in float32"),
    ],
)
def test_bench_conflicting_flags_are_one_line_errors(extra, message, capsys):
    assert main(["bench", *extra, "--no-memory", "--repeats", "1", "--image-size", "32", "--batch-size", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bench_runs_short_steps_several_times_per_repeat(monkeypatch):
    from ecanet.studies import bench

    cfg = bench.BenchConfig(["resnet20", "eca_resnet20"], batch_size=2, image_size=32, repeats=2, warmup=0)
    cfg.memory, cfg.train = False, False
    monkeypatch.setattr(bench, "calls_per_repeat", lambda fn, seconds, sync: 3)
    infer, calls, messages = bench.Runner.infer, [], []
    monkeypatch.setattr(bench.Runner, "infer", lambda self: (calls.append(self), infer(self)))
    bench.run_bench(cfg, log=messages.append)
    assert len(calls) == 2 * 2 * 3  # two models, two repeats of three calls
    assert "infer: 2 interleaved repeats of 3 step(s) each" in messages
