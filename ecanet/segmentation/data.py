"""Semantic segmentation data: images and PNG masks of class indices (palette PNGs as VOC stores them,
or grey values), from two folders matched by file stem or from the VOC layout; checked once when read;
joint image-mask transforms from torchvision's ``transforms.v2`` (masks resized with nearest)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import DataError
from ..images import IMAGE_SUFFIXES, load_rgb

MASKS_AS = ("classes", "foreground")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's: the backbones were trained with them
Pair = tuple[Path, Path]


def _listed(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def folder_pairs(images: str | Path, masks: str | Path, flags: tuple[str, str] = ("--images", "--masks")) -> list[Pair]:
    """(image, mask) for every image of ``images`` and the mask of the same stem in ``masks`` (a ``_mask``
    suffix is allowed). Images without masks and masks without images are an error listing a few."""
    images, masks = Path(images), Path(masks)
    for flag, folder in zip(flags, (images, masks)):
        if not folder.is_dir():
            raise DataError(f"{flag}: {folder} is not a folder")
    files = {p.stem: p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    by_stem = {p.stem.removesuffix("_mask"): p for p in masks.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    if not files:
        raise DataError(f"{flags[0]}: {images} holds no images")
    lonely = sorted(files[s].name for s in files.keys() - by_stem.keys())
    if lonely:
        raise DataError(f"{flags[1]}: {len(lonely)} images in {images} have no mask in {masks}: {_listed(lonely)}")
    orphans = sorted(by_stem[s].name for s in by_stem.keys() - files.keys())
    if orphans:
        raise DataError(f"{flags[1]}: {len(orphans)} masks in {masks} have no image in {images}: {_listed(orphans)}")
    return [(files[s], by_stem[s]) for s in sorted(files)]


def voc_pairs(root: str | Path, split: str) -> list[Pair]:
    """(image, mask) of the ids in ``ROOT/ImageSets/Segmentation/{split}.txt``, from ``JPEGImages/`` and
    ``SegmentationClass/``; an id whose file is missing is an error naming the list and the file."""
    root = Path(root)
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(
            f"--voc: {listing} not found (expected the VOC layout: JPEGImages/, SegmentationClass/, ImageSets/)"
        )
    pairs = []
    for line in listing.read_text().split():
        pair = (root / "JPEGImages" / f"{line}.jpg", root / "SegmentationClass" / f"{line}.png")
        missing = [p for p in pair if not p.is_file()]
        if missing:
            raise DataError(f"--voc: {listing} lists {line!r}, but {missing[0]} does not exist")
        pairs.append(pair)
    if not pairs:
        raise DataError(f"--voc: {listing} lists no images")
    return pairs


def read_mask(path: Path, masks_as: str = "classes") -> np.ndarray:
    """A mask's class index per pixel (palette PNGs give their indices, not colours); with
    ``masks_as="foreground"``, an instance mask (0 background, 1..N instances) as 0/1."""
    with Image.open(path) as m:
        labels = np.array(m)
    if labels.ndim == 3:
        labels = labels[..., 0]
    return (labels > 0).astype(np.uint8) if masks_as == "foreground" else labels


def check_masks(pairs: Sequence[Pair], masks_as: str, ignore_index: int, num_classes: int | None) -> int:
    """Read every mask once: its size must be its image's, and its values class indices below
    ``num_classes`` or the ignore index. Returns the class count (``num_classes``, or the largest index
    seen + 1); an offending file is named with its values."""
    if masks_as not in MASKS_AS:
        raise ValueError(f"--masks-as must be one of {MASKS_AS}, got {masks_as!r}")
    largest = 0
    for image, mask in pairs:
        labels = read_mask(mask, masks_as)
        with Image.open(image) as im:
            size = im.size
        if labels.shape != (size[1], size[0]):
            raise DataError(
                f"{mask}: mask is {labels.shape[1]}x{labels.shape[0]}, its image {image.name} is {size[0]}x{size[1]}"
            )
        values = np.unique(labels)
        values = values[values != ignore_index]
        if num_classes is not None and len(values) and (values.min() < 0 or values.max() >= num_classes):
            bad = [int(v) for v in values if not 0 <= v < num_classes]
            raise DataError(
                f"{mask}: values {bad[:8]} are not class indices 0..{num_classes - 1} (--num-classes) "
                f"nor the ignore index {ignore_index}"
            )
        largest = max(largest, int(values.max()) if len(values) else 0)
    return num_classes if num_classes is not None else largest + 1


class SegmentationData(Dataset):
    """(image, mask) pairs as (float image tensor, int64 mask) after a joint ``transform``."""

    def __init__(self, pairs: Sequence[Pair], transform: Callable, masks_as: str = "classes") -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.masks_as = masks_as

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.pairs[index]
        img = tv_tensors.Image(v2.functional.pil_to_tensor(load_rgb(str(image))))
        target = tv_tensors.Mask(torch.from_numpy(read_mask(mask, self.masks_as).astype(np.int64)))
        img, target = self.transform(img, target)
        return img, target.as_subclass(Tensor)


def _finish() -> list:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(MEAN, STD)]


def train_transform(size: int, ignore_index: int = 255) -> v2.Compose:
    """The segmentation reference's augmentation: random rescale (0.5-2x of ``size``), random ``size``
    crop (padded with the ignore index in the mask), horizontal flip."""
    return v2.Compose(
        [
            v2.RandomResize(int(0.5 * size), int(2.0 * size)),
            v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}),
            v2.RandomHorizontalFlip(),
            *_finish(),
        ]
    )


def eval_transform(size: int) -> v2.Compose:
    """Resize to ``size`` x ``size`` (so images batch; metrics are taken at that size)."""
    return v2.Compose([v2.Resize((size, size)), *_finish()])
