import os
import pickle

import pytest
import torch
import torchvision

from ecanet import ECA, CheckpointError, create_model, init_from_torchvision, load_checkpoint, save_weights


def randomize(model, seed=0):
    """Random values everywhere, BN statistics included, so any mis-load changes outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return model


def same_outputs(a, b, size=64):
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


def save_authors_format(model, path, arch, legacy=False):
    """The layout of the authors' released eca_*.pth.tar files (DataParallel prefix, training state)."""
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save(
        {
            "epoch": 100,
            "arch": arch,
            "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
            "best_prec1": torch.tensor(77.48),
            "optimizer": sgd.state_dict(),
        },
        path,
        _use_new_zipfile_serialization=not legacy,
    )


@pytest.mark.parametrize("legacy", [False, True])
def test_authors_checkpoint_builds_right_model(tmp_path, legacy):
    src = randomize(create_model("eca_resnet18", eca_k=[3, 5, 7, 9], num_classes=1000))
    path = tmp_path / "eca_resnet18_k3579.pth.tar"
    save_authors_format(src, path, "eca_resnet18", legacy)
    model = load_checkpoint(path)
    assert model.config["model"] == "eca_resnet18"
    assert model.config["eca_k"] == [3, 5, 7, 9]  # read off the weight shapes, not the released defaults
    same_outputs(src, model)


def authors_resnet50_k3557_state() -> dict[str, torch.Tensor]:
    """The key list of the authors' released eca_resnet50_k3557.pth.tar, written from their model definition
    (torchvision's ResNet names; ``eca_layer`` as ``eca`` with a bias-free ``Conv1d(1, 1, k)`` named ``conv``;
    DataParallel's ``module.`` prefix), not from this project's modules: names and shapes as literals."""
    g = torch.Generator().manual_seed(0)
    state: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def norm(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            state[f"{prefix}.{name}"] = (c,)
        state[f"{prefix}.num_batches_tracked"] = ()

    norm("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks, k) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), (3, 5, 5, 7)), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            state[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            norm(f"{p}.bn1", planes)
            state[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            norm(f"{p}.bn2", planes)
            state[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
            norm(f"{p}.bn3", 4 * planes)
            state[f"{p}.eca.conv.weight"] = (1, 1, k)
            if b == 0:
                state[f"{p}.downsample.0.weight"] = (4 * planes, inplanes, 1, 1)
                norm(f"{p}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    state["fc.weight"], state["fc.bias"] = (1000, 2048), (1000,)
    return {
        "module." + k: torch.tensor(7) if shape == () else torch.rand(shape, generator=g) + 0.5
        for k, shape in state.items()
    }


def test_authors_resnet50_layout_written_from_their_key_list(tmp_path):
    state = authors_resnet50_k3557_state()
    assert len(state) == 53 + 5 * 53 + 16 + 2  # 53 convolutions, their BatchNorms (5 entries), 16 ECA, fc
    assert state["module.layer4.2.eca.conv.weight"].shape == (1, 1, 7)
    assert state["module.layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["module.layer3.5.conv2.weight"].shape == (256, 256, 3, 3)
    path = tmp_path / "eca_resnet50_k3557.pth.tar"
    torch.save({"epoch": 100, "arch": "eca_resnet50", "state_dict": state, "best_prec1": 77.42}, path)
    model = load_checkpoint(path)
    assert model.config["model"] == "eca_resnet50" and model.config["eca_k"] == [3, 5, 5, 7]
    own = model.state_dict()
    assert set(own) == {k.removeprefix("module.") for k in state}
    for key, value in state.items():
        assert torch.equal(own[key.removeprefix("module.")], value), key


def test_authors_mobilenet_checkpoint(tmp_path):
    src = randomize(create_model("eca_mobilenet_v2", num_classes=1000))
    path = tmp_path / "eca_mobilenetv2_k13.pth.tar"
    save_authors_format(src, path, "eca_mobilenet_v2")
    model = load_checkpoint(path)
    assert model.config["model"] == "eca_mobilenet_v2" and model.config["eca_k"] == [1, 1, 1, 1, 3, 3, 3]
    same_outputs(src, model)


@pytest.mark.parametrize("name", ["resnet18", "se_resnet18", "cbam_resnet18", "eca_ns_resnet20", "eca_resnet50"])
def test_infers_architecture_from_plain_state_dict(tmp_path, name):
    src = randomize(create_model(name, num_classes=5))
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    model = load_checkpoint(path)
    assert model.config["model"] == name and model.config["num_classes"] == 5
    same_outputs(src, model, 32)


def test_safetensors_roundtrip_rebuilds_model(tmp_path):
    src = randomize(create_model("ceca_resnet20", eca_k=[5, 3, 1], num_classes=3))
    path = save_weights(src, tmp_path / "w.safetensors")
    model = load_checkpoint(path)
    assert model.config == src.config
    assert model.layer1[0].eca.padding == "circular"
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert not list(tmp_path.glob("*.tmp"))


def test_own_training_checkpoint_format(tmp_path):
    src = randomize(create_model("eca_resnet20"))
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": src.state_dict(), "meta": src.config, "epoch": 3}, path)
    same_outputs(src, load_checkpoint(path), 32)


def test_load_into_given_model_is_whole_or_fresh_only_where_asked(tmp_path, caplog):
    src = randomize(create_model("resnet18"))
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    target = create_model("eca_resnet18")
    before = target.conv1.weight.clone()
    with pytest.raises(CheckpointError, match=r"w\.pt: does not fit the model: 8 tensors missing .*layer1\.0\.eca"):
        load_checkpoint(path, model=target)
    assert torch.equal(target.conv1.weight, before)  # nothing copied on error
    with caplog.at_level("INFO", logger="ecanet"):
        load_checkpoint(path, model=target, fresh=("attention",))
    assert "left fresh as asked" in caplog.text and "layer1.0.eca.conv.weight" in caplog.text
    assert torch.equal(target.conv1.weight, src.conv1.weight)
    with pytest.raises(CheckpointError, match=r"w\.pt: does not fit the model: 2 tensors of the file have no place"):
        load_checkpoint(tmp_path / "w.pt", model=_without_fc(create_model("resnet18")))


def _without_fc(model):
    model.fc = torch.nn.Identity()
    return model


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("as_torch", [True, False])
def test_pickle_payload_is_refused_without_running(tmp_path, as_torch):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    if as_torch:
        torch.save({"state_dict": {"fc.weight": torch.ones(1)}, "x": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))
    # torch.save's pickle names a forbidden global; a raw protocol-5 pickle fails on an opcode first
    expected = r"evil\.pth: refused to load.*weights-only" if as_torch else r"evil\.pth: not a PyTorch or safetensors"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_files(tmp_path):
    model = create_model("resnet20")
    full = tmp_path / "full.pt"
    torch.save(model.state_dict(), full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt: truncated or corrupt checkpoint"):
        load_checkpoint(cut)
    st = save_weights(model, tmp_path / "full.safetensors")
    cut_st = tmp_path / "cut.safetensors"
    cut_st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: truncated or corrupt safetensors"):
        load_checkpoint(cut_st)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello world")
    with pytest.raises(CheckpointError, match=r"notes\.txt: not a PyTorch or safetensors checkpoint"):
        load_checkpoint(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: empty file"):
        load_checkpoint(empty)
    other = tmp_path / "list.pt"
    torch.save([1, 2, 3], other)
    with pytest.raises(CheckpointError, match=r"list\.pt: no weights found.*found list"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_another_architecture(tmp_path):
    path = tmp_path / "r20.pt"
    torch.save(create_model("eca_resnet20").state_dict(), path)
    with pytest.raises(
        CheckpointError, match=r"r20\.pt: checkpoint is for another architecture: 'conv1.weight' has shape"
    ):
        load_checkpoint(path, model=create_model("eca_resnet18"))
    foreign = tmp_path / "vgg.pt"
    torch.save(torchvision.models.vgg11().features.state_dict(), foreign)
    with pytest.raises(CheckpointError, match=r"vgg\.pt: weights of an architecture outside the zoo"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match=r"vgg\.pt: checkpoint is for another architecture: none of its"):
        load_checkpoint(foreign, model=create_model("resnet18"))


@pytest.mark.parametrize("attn", ["eca", "se", "cbam"])
@pytest.mark.parametrize("arch", ["resnet50", "mobilenet_v2"])
def test_init_from_torchvision_copies_every_backbone_tensor(attn, arch):
    tv = randomize(getattr(torchvision.models, arch)())
    model = create_model(f"{attn}_{arch}")
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from_torchvision(model, tv.state_dict())
    ours = model.state_dict()
    for k, v in tv.state_dict().items():
        assert torch.equal(ours[k], v), k
    assert set(report.new_attention) == set(ours) - set(tv.state_dict())
    assert report.new_attention and not report.new_head and not report.unexpected
    for k in report.new_attention:
        assert torch.equal(ours[k], fresh[k])


def test_init_from_torchvision_with_new_head_and_wrong_backbone(tmp_path):
    tv = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    report = init_from_torchvision(create_model("eca_resnet18", num_classes=10), path)
    assert report.new_head == ["fc.bias", "fc.weight"]
    with pytest.raises(CheckpointError, match=r"resnet18\.pth: checkpoint is for another architecture"):
        init_from_torchvision(create_model("eca_resnet50"), path)
    with pytest.raises(CheckpointError, match="tensors missing from the file"):
        init_from_torchvision(
            create_model("eca_resnet18"), {k: v for k, v in tv.state_dict().items() if "layer4" not in k}
        )


def test_loaded_eca_modules_have_file_kernel_sizes(tmp_path):
    src = create_model("eca_resnet34", eca_k=[1, 3, 3, 5])
    path = tmp_path / "x.pth.tar"
    save_authors_format(src, path, "eca_resnet34")
    ks = {m.kernel_size for m in load_checkpoint(path).layer1.modules() if isinstance(m, ECA)}
    assert ks == {1}


def test_zoo_name_builds_the_model_that_fits_the_file(tmp_path):
    src = randomize(create_model("resnet18", num_classes=10))
    path = tmp_path / "plain.pth"
    torch.save(src.state_dict(), path)  # no metadata: name and classes come from keys and shapes
    model = load_checkpoint(path, "resnet18")
    assert model.fc.out_features == 10
    same_outputs(src, model, 32)
    with pytest.raises(CheckpointError, match=r"plain\.pth: holds resnet18, not eca_resnet18 \(--model\)"):
        load_checkpoint(path, "eca_resnet18")
    with pytest.raises(CheckpointError, match=r"plain\.pth: holds a 10-class model, not 5 classes"):
        load_checkpoint(path, num_classes=5)


def test_fresh_names_only_known_parts():
    from ecanet.weights import load_state

    with pytest.raises(ValueError, match=r"fresh: unknown parts \['classifier'\]; choose from \('head', 'attention'\)"):
        load_state(create_model("resnet18"), create_model("resnet18").state_dict(), fresh=("classifier",))
