"""Data for classification: image folders in the ImageNet layout, the paper's transforms, and the embedded
default dataset (scikit-learn's 1,797 handwritten digits, which ship inside the installed package)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2 as T

from ..errors import DataError
from ..images import load_rgb

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SMALL_IMAGE = 64  # at or below this side, CIFAR-style pad-and-crop replaces random-resized-crop


class ImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder, converting every image to RGB; an unreadable file yields None (the
    collate function drops it and counts it) instead of crashing the epoch."""

    def __init__(self, root: str | Path, transform=None, flag: str = "--data") -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{flag}: {root} is not a folder")
        try:
            super().__init__(str(root), transform=transform, loader=load_rgb)
        except FileNotFoundError as e:
            raise DataError(f"{flag}: {root}: {str(e).splitlines()[0]}") from None

    def __getitem__(self, index: int) -> tuple[Tensor, int] | tuple[None, str]:
        path, target = self.samples[index]
        try:
            image = self.loader(path)
        except (OSError, ValueError, Image.DecompressionBombError):
            return None, path
        return (self.transform(image) if self.transform else image), target


def collate_skipping(batch: list) -> tuple[Tensor, Tensor, list[str]]:
    """Stack the readable samples; return the paths of the unreadable ones alongside."""
    good = [(x, y) for x, y in batch if x is not None]
    bad = [y for x, y in batch if x is None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    xs, ys = zip(*good)
    return torch.stack(xs), torch.tensor(ys), bad


def train_transform(image_size: int) -> T.Compose:
    """Random-resized-crop + flip (the paper's ImageNet setting); pad-and-crop + flip for small images."""
    if image_size <= SMALL_IMAGE:
        crop = [T.Resize((image_size, image_size)), T.RandomCrop(image_size, padding=image_size // 8)]
    else:
        crop = [T.RandomResizedCrop(image_size)]
    return T.Compose([*crop, T.RandomHorizontalFlip(), *_to_tensor()])


def eval_transform(image_size: int) -> T.Compose:
    """Resize to size / 0.875 and center-crop (256 -> 224 for ImageNet); plain resize for small images."""
    if image_size <= SMALL_IMAGE:
        resize = [T.Resize((image_size, image_size))]
    else:
        resize = [T.Resize(math.floor(image_size / 0.875)), T.CenterCrop(image_size)]
    return T.Compose([*resize, *_to_tensor()])


def _to_tensor() -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def _restrict(folder: ImageFolder, indices: list[int]) -> ImageFolder:
    folder.samples = folder.imgs = [folder.samples[i] for i in indices]
    folder.targets = [folder.targets[i] for i in indices]
    return folder


def split_folder(
    root: str | Path, val_split: float, seed: int, image_size: int, augment: bool = True
) -> tuple[ImageFolder, ImageFolder]:
    """One image folder split into training and validation parts: stratified by class (scikit-learn's
    ``train_test_split``), the same for the same ``seed``; the parts get the training and evaluation
    transforms."""
    from sklearn.model_selection import train_test_split

    if not 0 < val_split < 1:
        raise ValueError(f"--val-split must be a fraction in (0, 1), got {val_split}")
    train = ImageFolder(root, train_transform(image_size) if augment else eval_transform(image_size), "--train-dir")
    val = ImageFolder(root, eval_transform(image_size), "--train-dir")
    try:
        kept, held = train_test_split(
            range(len(train.targets)), test_size=val_split, stratify=train.targets, random_state=seed
        )
    except ValueError as e:  # too few images of a class for the split
        raise DataError(f"--val-split {val_split}: cannot split {root} by class: {e}") from None
    return _restrict(train, sorted(kept)), _restrict(val, sorted(held))


class InMemory(Dataset):
    """An image folder decoded once and held as uint8 tensors (as CIFAR loaders hold CIFAR), so that data
    loading costs only the random transforms: for small images on few cores. The folder's transform is
    applied to the tensors; unreadable images yield ``(None, path)`` as the folder does."""

    def __init__(self, folder: ImageFolder) -> None:
        self.classes, self.targets, self.transform = folder.classes, folder.targets, folder.transform
        self.images: list[Tensor | str] = []
        for path, _ in folder.samples:
            try:
                self.images.append(T.functional.pil_to_tensor(folder.loader(path)))
            except (OSError, ValueError, Image.DecompressionBombError):
                self.images.append(path)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | tuple[None, str]:
        image = self.images[index]
        if isinstance(image, str):
            return None, image
        return (self.transform(image) if self.transform else image), self.targets[index]


def image_folders(
    train_dir: str | Path, val_dir: str | Path, image_size: int, augment: bool = True
) -> tuple[ImageFolder, ImageFolder]:
    """Train and validation folders; their class folders must agree."""
    transform = train_transform(image_size) if augment else eval_transform(image_size)
    train = ImageFolder(train_dir, transform, flag="--train-dir")
    val = ImageFolder(val_dir, eval_transform(image_size), flag="--val-dir")
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise DataError(
            f"class folders differ between {train_dir} and {val_dir}: only in train {only_train[:5]}, "
            f"only in val {only_val[:5]}"
        )
    return train, val


class Digits(Dataset):
    """scikit-learn's handwritten digits (1,797 8x8 grayscale images, 10 classes), as 3-channel tensors.

    A fixed, seeded split keeps 20 % for testing. Training samples get small random shifts (no flips:
    digits are not mirror-symmetric).
    """

    classes = [str(i) for i in range(10)]

    def __init__(self, train: bool, image_size: int = 32, seed: int = 0, augment: bool = True) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
        labels = torch.tensor(digits.target)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        cut = int(0.8 * len(order))
        keep = order[:cut] if train else order[cut:]
        images = T.functional.resize(images[keep], [image_size, image_size], antialias=True)
        self.images = ((images - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
        self.targets = labels[keep].tolist()
        self.augment = T.RandomCrop(image_size, padding=image_size // 8) if train and augment else None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        return (self.augment(image) if self.augment else image), self.targets[index]
