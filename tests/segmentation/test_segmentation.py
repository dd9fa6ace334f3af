"""Segmenters, their metrics and data, on generated images with class masks."""

import numpy as np
import pytest
import torch
from PIL import Image

from ecanet import create_model, create_segmenter, load_segmenter, save_weights
from ecanet.errors import EXTRAS
from ecanet.segmentation import confusion_matrix, segmentation_scores
from ecanet.segmentation.data import (
    SegmentationData,
    check_masks,
    eval_transform,
    folder_pairs,
    read_mask,
    train_transform,
)
from ecanet.segmentation.models import SMP_KINDS
from ecanet.segmentation.train import SegmentationStep, build_loss
from tests.helpers import make_segmentation_data, require_extra


def test_scores_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 2]])  # the ignored pixels' predictions do not count
    cm = confusion_matrix(pred, target, num_classes=4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    s = segmentation_scores(cm)
    # IoU: class 0 1/(2+2-1), class 1 2/(2+3-2), class 2 1/(2+1-1); class 3 absent from masks and predictions
    iou = [1 / 3, 2 / 3, 1 / 2]
    assert s["iou"][:3] == pytest.approx([v * 100 for v in iou]) and s["iou"][3] is None
    assert s["mIoU"] == pytest.approx(100 * sum(iou) / 3)
    dice = [2 * 1 / (2 + 2), 2 * 2 / (2 + 3), 2 * 1 / (2 + 1)]
    assert s["mDice"] == pytest.approx(100 * sum(dice) / 3)
    assert s["pixel_acc"] == pytest.approx(100 * 4 / 6)


def test_scores_equal_torchmetrics():
    tm = pytest.importorskip("torchmetrics.classification")
    torch.manual_seed(0)
    target = torch.randint(0, 5, (4, 16, 16))
    target[:, 0] = 255
    pred = torch.where(torch.rand(4, 16, 16) < 0.6, target.clamp(max=4), torch.randint(0, 5, (4, 16, 16)))
    s = segmentation_scores(confusion_matrix(pred, target, 5))
    jaccard = tm.MulticlassJaccardIndex(5, average=None, ignore_index=255)(pred, target)
    f1 = tm.MulticlassF1Score(5, average="macro", ignore_index=255, multidim_average="global")(pred, target)
    acc = tm.MulticlassAccuracy(5, average="micro", ignore_index=255)(pred, target)
    assert s["iou"] == pytest.approx((jaccard * 100).tolist())
    assert s["mDice"] == pytest.approx(float(f1) * 100)
    assert s["pixel_acc"] == pytest.approx(float(acc) * 100)


def _needs(kind: str) -> None:
    if kind in SMP_KINDS:
        require_extra("segmentation")


@pytest.mark.parametrize("kind", ["deeplabv3", "fcn", "unet", "fpn", "deeplabv3plus"])
def test_each_kind_trains(kind, tmp_path):
    _needs(kind)
    images, masks = make_segmentation_data(tmp_path, n=4)
    data = SegmentationData(folder_pairs(images, masks), eval_transform(64))
    batch = tuple(torch.stack(t) for t in zip(*[data[i] for i in range(4)]))
    torch.manual_seed(0)
    model = create_segmenter(kind, "eca_resnet18", num_classes=3)
    out = model(batch[0])
    assert out["out"].shape == (4, 3, 64, 64) and ("aux" in out) == (kind in ("deeplabv3", "fcn"))
    step = SegmentationStep(torch.device("cpu"), build_loss("ce"), 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(5):
        loss, counts = step(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    model.eval()
    with torch.no_grad():
        _, counts = step(model, batch)
    assert counts["confusion"].sum() == (batch[1] != 255).sum()


@pytest.mark.parametrize("kind", ["deeplabv3", "unet"])
def test_backbone_weights_fill_the_encoder(kind, tmp_path):
    _needs(kind)
    torch.manual_seed(3)
    backbone = create_model("eca_resnet18")
    save_weights(backbone, tmp_path / "b.safetensors")
    model = create_segmenter(kind, "eca_resnet18", 3, backbone_weights=str(tmp_path / "b.safetensors"))
    encoder = model.backbone if kind == "deeplabv3" else model.net.encoder.model
    expected = backbone.state_dict()
    got = encoder.state_dict()
    assert got and all(torch.equal(v, expected[k]) for k, v in got.items())


def test_torchvision_weights_fill_an_eca_backbone(tmp_path):
    """A plain torchvision file: every backbone tensor copied, only the ECA layers start fresh."""
    import torchvision

    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model = create_segmenter("fcn", "eca_resnet18", 3, backbone_weights=str(tmp_path / "tv.pth"))
    own = model.backbone.state_dict()
    expected = tv.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in own.items() if ".eca." not in k)
    assert sum(".eca." in k for k in own) == 8


def test_grey_segmenter_from_rgb_weights(tmp_path):
    save_weights(create_model("resnet18"), tmp_path / "b.safetensors")
    model = create_segmenter("deeplabv3", "resnet18", 2, str(tmp_path / "b.safetensors"), output_stride=16, in_chans=1)
    assert model(torch.randn(2, 1, 64, 64))["out"].shape == (2, 2, 64, 64)


def test_saved_segmenter_loads_back_identical(tmp_path):
    model = create_segmenter("fcn", "eca_mobilenet_v2", 4, output_stride=16).eval()
    save_weights(model, tmp_path / "s.safetensors")
    back = load_segmenter(tmp_path / "s.safetensors").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x)["out"], model(x)["out"])
    assert back.config["output_stride"] == 16 and back.config["num_classes"] == 4


def test_dice_loss_is_the_libraries():
    _needs("unet")
    smp = pytest.importorskip("segmentation_models_pytorch")
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    target[0, 0] = 255
    want = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    want = want + smp.losses.DiceLoss("multiclass", ignore_index=255)(logits, target)
    torch.testing.assert_close(build_loss("ce+dice")(logits, target), want)
    with pytest.raises(ValueError, match="--loss: unknown loss 'focal'"):
        build_loss("focal")


def test_joint_transforms_keep_image_and_mask_aligned(tmp_path):
    """Random rescale, crop and flip move mask and image together: every red pixel is labelled 1."""
    images, masks = make_segmentation_data(tmp_path, n=2)
    data = SegmentationData(folder_pairs(images, masks), train_transform(40))
    torch.manual_seed(0)
    seen = 0
    for _ in range(8):
        image, mask = data[0]
        assert image.shape == (3, 40, 40) and mask.shape == (40, 40) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= {0, 1, 2, 255}
        red = (image[0] > 1.5) & (image[1] < -1.0) & (image[2] < -0.9)  # normalised (230, 40, 40)
        if red.sum() > 10:
            seen += 1
            assert (mask[red] == 1).float().mean() > 0.9  # interpolation may blur the rectangle's edge by a pixel
    assert seen >= 3


def test_masks_checks_and_foreground(tmp_path):
    images, masks = make_segmentation_data(tmp_path, n=3)
    pairs = folder_pairs(images, masks)
    assert check_masks(pairs, "classes", 255, None) == 3  # largest class index + 1, ignore index left out
    inst = tmp_path / "inst"
    inst.mkdir()
    for image, _ in pairs:
        labels = np.zeros((48, 64), np.uint8)
        labels[5:15, 5:15], labels[20:30, 30:40] = 1, 2  # two instances
        Image.fromarray(labels).save(inst / f"{image.stem}.png")
    fg = folder_pairs(images, inst)
    assert check_masks(fg, "foreground", 255, None) == 2
    assert set(np.unique(read_mask(fg[0][1], "foreground")).tolist()) == {0, 1}


def test_segmentation_extra_is_named():
    assert EXTRAS["segmentation"] == ("segmentation_models_pytorch",)


def test_segmenter_and_data_refusals(tmp_path):
    """The remaining one-line refusals: each names what was wrong."""
    from ecanet.errors import CheckpointError
    from ecanet.segmentation.config import SegmentConfig
    from ecanet.segmentation.train import data_pairs

    with pytest.raises(ValueError, match="--model: unknown segmenter 'pspnet'"):
        create_segmenter("pspnet")
    with pytest.raises(ValueError, match="in_chans must be >= 1, got 0"):
        create_model("resnet18", in_chans=0)
    with pytest.raises(ValueError, match="--voc and --images/--masks: give one source of data"):
        data_pairs(SegmentConfig(voc=str(tmp_path), images=str(tmp_path)))
    save_weights(create_model("resnet18"), tmp_path / "clf.safetensors")
    with pytest.raises(CheckpointError, match="clf.safetensors: not segmenter weights"):
        load_segmenter(tmp_path / "clf.safetensors")
    images, masks = make_segmentation_data(tmp_path / "d", n=2)
    with pytest.raises(ValueError, match="--masks-as must be one of"):
        check_masks(folder_pairs(images, masks), "instances", 255, None)


def test_smp_refusals():
    _needs("unet")
    with pytest.raises(ValueError, match="--output-stride: unet decodes every level and takes output stride 32 only"):
        create_segmenter("unet", "eca_resnet18", 3, output_stride=16)
    with pytest.raises(ValueError, match="--backbone: fpn takes ImageNet backbones .* not eca_resnet20"):
        create_segmenter("fpn", "eca_resnet20", 3)
