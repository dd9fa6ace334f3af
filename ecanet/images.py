"""Reading images: any file PIL reads, as RGB."""

from __future__ import annotations

from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # what the folder readers list


def load_rgb(path: str) -> Image.Image:
    """Open any PIL-readable image as RGB: grayscale, CMYK, palette (with transparency) and 16-bit included.

    Truncated and zero-byte files raise OSError (PIL's own checks), which the dataset counts and skips.
    """
    with Image.open(path) as im:
        im.load()
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("I;16", "I;16B", "I", "F"):
            im = im.point(lambda v: v / 256).convert("L")  # 16-bit / 32-bit grayscale to 8-bit
        return im.convert("RGB")
