import pytest
import torch

from tests.helpers import require_extra

require_extra("detection")
from ecanet import create_model, save_weights
from ecanet.detection import create_detector


def targets(with_masks):
    out = []
    for i in range(2):
        boxes = torch.tensor([[8.0 + i, 8.0, 40.0, 44.0 - i]])
        t = {"boxes": boxes, "labels": torch.tensor([1 + i])}
        if with_masks:
            mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
            mask[0, 8:44, 8:40] = 1
            t["masks"] = mask
        out.append(t)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["faster_rcnn", "mask_rcnn", "retinanet"])
def test_detector_trains_with_finite_decreasing_loss(kind):
    torch.manual_seed(0)
    model = create_detector(kind, "eca_resnet18", num_classes=3, min_size=64, max_size=64, trainable_layers=5)
    images = [torch.rand(3, 64, 64) for _ in range(2)]
    tgts = targets(kind == "mask_rcnn")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    losses = []
    model.train()
    for _ in range(6):
        loss = sum(model(images, tgts).values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        det = model(images)
    assert {"boxes", "scores", "labels"} <= set(det[0]) and ("masks" in det[0]) == (kind == "mask_rcnn")


def test_backbone_frozen_bn_fpn_levels_and_weights(tmp_path):
    src = create_model("eca_resnet50")
    with torch.no_grad():
        src.layer1[0].conv1.weight.fill_(0.5)
    weights = save_weights(src, tmp_path / "eca50.safetensors")
    model = create_detector("faster_rcnn", "eca_resnet50", backbone_weights=str(weights), min_size=64, max_size=64)
    body = model.backbone.body
    assert torch.equal(body.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert not body.layer1[0].conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad
    feats = model.backbone(torch.rand(1, 3, 64, 64))
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    retina = create_detector("retinanet", "se_resnet50", min_size=64, max_size=64)
    assert list(retina.backbone(torch.rand(1, 3, 64, 64))) == ["0", "1", "2", "p6", "p7"]


def test_detector_errors():
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        create_detector("yolo")
    with pytest.raises(
        ValueError, match="--backbone: detectors take the ImageNet ResNets of the zoo, not eca_resnet20"
    ):
        create_detector("faster_rcnn", "eca_resnet20")
