"""What ECA learns: channel-attention weights per layer (heat strips, per image and across images) and
class-activation maps (Grad-CAM, through the maintained ``grad-cam`` package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..classification.data import eval_transform
from ..errors import require
from ..images import load_rgb
from ..layers import is_attention


def load_images(paths: list[str | Path], image_size: int) -> Tensor:
    transform = eval_transform(image_size)
    return torch.stack([transform(load_rgb(str(p))) for p in paths])


@torch.no_grad()
def channel_attention(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """Per attention layer (ECA, SE, or CBAM's channel half), the (N, C) channel weights for ``images``."""
    layers = {name: m for name, m in model.named_modules() if is_attention(m)}
    if not layers:
        raise ValueError(f"{type(model).__name__} has no ECA, SE or CBAM layer to show")
    weights: dict[str, Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: weights.__setitem__(name, mod.attention(args[0])))
        for name, m in layers.items()
    ]
    try:
        model.eval()(images)  # the hooks make every block call its attention module (fast_path_applies)
    finally:
        for h in hooks:
            h.remove()
    return {name: weights[name].float().cpu() for name in layers}


def _figure(n_layers: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 1000 px wide, 30 px per layer plus a margin, at 100 dpi
    return plt, plt.subplots(n_layers, 1, figsize=(10, 0.3 * n_layers + 1.0), dpi=100, squeeze=False)


def plot_strips(strips: dict[str, np.ndarray], title: str, path: Path, vmin: float = 0.0, vmax: float = 1.0) -> Path:
    """One heat strip per layer (channels along x), top to bottom in network order; the stage is the layer
    name's first part (``layer2.1.eca`` -> ``layer2``)."""
    plt, (fig, axes) = _figure(len(strips))
    for ax, (name, values) in zip(axes[:, 0], strips.items()):
        image = ax.imshow(values[None, :], aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_yticks([0], [name], fontsize=6)
        ax.set_xticks([])
    fig.suptitle(title, fontsize=9)
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.02)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def attention_figures(model: nn.Module, paths: list[str | Path], out: str | Path, image_size: int = 224) -> list[Path]:
    """attention_<image>.png per image and attention_mean.png / attention_spread.png across the images."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = channel_attention(model, load_images(paths, image_size))
    written = []
    for i, p in enumerate(paths):
        strips = {name: w[i].numpy() for name, w in weights.items()}
        written.append(plot_strips(strips, f"channel attention: {Path(p).name}", out / f"attention_{Path(p).stem}.png"))
    mean = {name: w.mean(0).numpy() for name, w in weights.items()}
    written.append(plot_strips(mean, f"mean over {len(paths)} images", out / "attention_mean.png"))
    spread = {name: w.std(0, unbiased=False).numpy() for name, w in weights.items()}
    top = max(float(v.max()) for v in spread.values()) or 1.0
    written.append(plot_strips(spread, f"std over {len(paths)} images", out / "attention_spread.png", vmax=top))
    return written


def grad_cam(
    model: nn.Module, layer: str, images: Tensor, classes: list[int] | None = None
) -> tuple[np.ndarray, list[int]]:
    """Grad-CAM heatmaps (N, H, W) in [0, 1] at ``layer`` for ``classes`` (default: the top prediction)."""
    GradCAM = require("pytorch_grad_cam", "viz").GradCAM
    ClassifierOutputTarget = require("pytorch_grad_cam.utils.model_targets", "viz").ClassifierOutputTarget

    modules = dict(model.named_modules())
    if layer not in modules:
        close = [n for n in modules if n.startswith(layer.split(".")[0])][:3]
        raise ValueError(f"--layer: no module {layer!r} in {type(model).__name__} (e.g. {close or list(modules)[1:4]})")
    model.eval()
    if classes is None:
        with torch.no_grad():
            classes = model(images).argmax(1).tolist()
    with GradCAM(model=model, target_layers=[modules[layer]]) as cam:
        maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in classes])
    return maps, classes


def cam_figures(
    model: nn.Module,
    layer: str,
    paths: list[str | Path],
    out: str | Path,
    image_size: int = 224,
    cls: int | None = None,
) -> list[Path]:
    """cam_<image>.png: each image with its Grad-CAM heatmap laid over it."""
    from PIL import Image

    show_cam_on_image = require("pytorch_grad_cam.utils.image", "viz").show_cam_on_image
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_images(paths, image_size)
    maps, classes = grad_cam(model, layer, images, None if cls is None else [cls] * len(paths))
    written = []
    for p, heat, c, x in zip(paths, maps, classes, images):
        rgb = (x - x.min()) / (x.max() - x.min() + 1e-12)
        overlay = show_cam_on_image(rgb.permute(1, 2, 0).numpy(), heat, use_rgb=True)
        path = out / f"cam_{Path(p).stem}_class{c}.png"
        Image.fromarray(overlay).save(path)
        written.append(path)
    return written


@torch.no_grad()
def canet_figures(model: nn.Module, paths: list[str | Path], out: str | Path, image_size: int = 224) -> list[Path]:
    """canet_<image>.png per image: what CA-Net attended to (Gu et al., TMI 2020, their Figs. of attention):
    the input with the prediction, each attention gate's map as a heatmap over the input (its two pathways
    averaged), the scale that weighs most at each pixel (colour per scale, finest first), and the channel
    weights of every decoder stage as bars."""
    from torchvision.transforms.v2 import functional as TF

    from ..segmentation.data import MEAN, STD

    if type(model).__name__ != "CANet":
        raise ValueError(f"ecanet viz canet: the weights hold a {type(model).__name__}, not CA-Net (--model canet)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        image = TF.resize(TF.to_image(load_rgb(str(path))), [image_size, image_size])
        x = TF.normalize(TF.to_dtype(image, torch.float32, scale=True), MEAN, STD)
        result = model.eval()(x[None], return_attention=True)
        maps = result["attention"]
        rgb = image.permute(1, 2, 0).numpy()
        panels = [("prediction", result["out"].argmax(1)[0].numpy())]
        for level, m in sorted(maps["spatial"].items()):
            up = torch.nn.functional.interpolate(
                m.mean(1, keepdim=True), size=(image_size, image_size), mode="bilinear"
            )
            panels.append((f"spatial attention, level {level}", up[0, 0].numpy()))
        if "scale_pixel" in maps:
            panels.append(("strongest scale (1 = finest)", maps["scale_pixel"][0].argmax(0).numpy() + 1))
        fig, axes = plt.subplots(2, max(len(panels), len(maps["channel"]), 1), figsize=(3 * max(len(panels), 4), 6))
        for ax in axes.flat:
            ax.axis("off")
        for ax, (title, values) in zip(axes[0], panels):
            ax.imshow(rgb)
            cmap = "tab10" if title.startswith("strongest") else "jet"
            ax.imshow(values, alpha=0.5, cmap=cmap, interpolation="nearest")
            ax.set_title(title, fontsize=8)
        for ax, (stage, w) in zip(axes[1], sorted(maps["channel"].items(), reverse=True)):
            ax.axis("on")
            ax.bar(range(w.shape[1]), w[0].float().numpy(), width=1.0)
            ax.set_title(f"channel weights, decoder stage {stage}", fontsize=8)
            ax.tick_params(labelsize=6)
        fig.suptitle(f"CA-Net attention: {Path(path).name}", fontsize=9)
        target = out / f"canet_{Path(path).stem}.png"
        fig.savefig(target, dpi=100)
        plt.close(fig)
        written.append(target)
    return written
