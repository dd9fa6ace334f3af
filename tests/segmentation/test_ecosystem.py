"""The zoo in timm's registry and as segmentation-models-pytorch encoders."""

import pytest
import torch

from tests.helpers import require_extra

require_extra("segmentation")
import segmentation_models_pytorch as smp
import timm

from ecanet import ECA, create_model, list_models, register_timm, save_weights


@pytest.fixture(scope="module", autouse=True)
def registered():
    return register_timm()


def test_every_zoo_model_is_registered(registered):
    assert registered == [f"ecanet_{n}" for n in list_models()]
    assert register_timm() == registered  # idempotent, no re-registration
    assert sorted(timm.list_models("ecanet_*")) == sorted(registered)
    assert timm.models.get_pretrained_cfg("ecanet_eca_resnet20").input_size == (3, 32, 32)


@pytest.mark.parametrize("name", ["eca_resnet50", "cbam_resnet18", "eca_mobilenet_v2", "eca_resnet20"])
def test_timm_names_create_the_same_network(name):
    kwargs = dict(features_only=True, output_stride=16, in_chans=1)
    torch.manual_seed(0)
    ours = create_model(name, **kwargs).eval()
    torch.manual_seed(0)
    theirs = timm.create_model(f"ecanet_{name}", **kwargs).eval()
    assert type(theirs) is type(ours) and theirs.feature_info.reduction() == ours.feature_info.reduction()
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        for u, v in zip(ours(x), theirs(x), strict=True):
            torch.testing.assert_close(u, v)


def test_pretrained_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    trained = create_model("eca_resnet18")
    save_weights(trained, tmp_path / "w.safetensors")
    net = timm.create_model(
        "ecanet_eca_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "w.safetensors"))
    )
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in net.state_dict().items())
    five = timm.create_model(
        "ecanet_eca_resnet18",
        pretrained=True,
        num_classes=5,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "w.safetensors")),
    )  # another class count: the head stays fresh, everything else comes from the file
    assert five.fc.out_features == 5 and torch.equal(five.conv1.weight, trained.conv1.weight)
    with pytest.raises(ValueError, match="pretrained=True needs a local weights file"):
        timm.create_model("ecanet_eca_resnet18", pretrained=True)
    with pytest.raises(ValueError, match="does not fit the model|another architecture"):
        timm.create_model(
            "ecanet_eca_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "w.safetensors"))
        )


def test_smp_unet_with_an_eca_encoder_trains():
    torch.manual_seed(0)
    net = smp.Unet("tu-ecanet_eca_resnet18", encoder_weights=None, classes=3)
    assert sum(isinstance(m, ECA) for m in net.encoder.modules()) == 8  # one per basic block
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 3, (4, 64, 64))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert net.encoder.model.conv1.weight.grad is not None
