"""Where images come from: a user's folder, or real photos shipped by scikit-image.

Unreadable files are skipped and counted, never fatal: `ImageSet.skipped` names them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repo_gen.data.preprocess import ImageError, decode_image, preprocess, to_rgb
from repo_gen.models import DataConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# Real photographs bundled with scikit-image (no network needed). Drawings, microscopy and
# synthetic images are left out on purpose: they are not what a classifier is calibrated on.
SKIMAGE_PHOTOS = ("astronaut", "cat", "chelsea", "coffee", "rocket", "motorcycle_left",
                  "motorcycle_right", "hubble_deep_field", "immunohistochemistry", "camera",
                  "coins", "moon", "page", "grass", "gravel", "brick", "colorwheel", "retina")


@dataclass
class ImageSet:
    tensors: np.ndarray  # [N, 3, H, W] float32
    names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    representative: bool = True
    note: str = ""


def list_images(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_files(root: Path, paths: Iterable[Path], data: DataConfig, count: int | None = None) -> ImageSet:
    """Preprocess up to `count` decodable images of `paths`, in order; unreadable files are
    skipped and named in `skipped`. `names` are paths relative to `root`."""
    size = data.input_size[1]
    tensors: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    for path in paths:
        if count is not None and len(tensors) >= count:
            break
        try:
            img = decode_image(path.read_bytes())
        except (ImageError, OSError) as e:
            skipped.append((str(path), str(e)))
            continue
        tensors.append(preprocess(img, size, data.interpolation, data.crop_pct, data.mean, data.std))
        names.append(str(path.relative_to(root)))
    arr = np.stack(tensors) if tensors else np.zeros((0, 3, size, size), np.float32)
    return ImageSet(arr, names, skipped)


def load_dir(directory: Path, data: DataConfig, count: int | None = None) -> ImageSet:
    """Preprocess up to `count` images found recursively under `directory` (sorted by path)."""
    return load_files(Path(directory), list_images(directory), data, count)


@functools.cache
def skimage_photos() -> tuple[tuple[str, Any], ...]:
    """(name, RGB PIL image) for each bundled scikit-image photo that loads; decoded once per
    process (a build draws calibration and evaluation sets from them). Treat the images as read-only."""
    from PIL import Image
    from skimage import data as skdata

    out: list[tuple[str, Any]] = []
    for name in SKIMAGE_PHOTOS:
        fn = getattr(skdata, name, None)
        if fn is None:
            continue
        try:
            arr = fn()
        except Exception:  # some datasets need a download (pooch); skip those
            continue
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float64) / max(float(arr.max()), 1e-12), 0, 1) * 255).astype(np.uint8)
        out.append((name, to_rgb(Image.fromarray(arr))))
    return tuple(out)


def builtin_photos(data: DataConfig, count: int, seed: int = 0, offset: int = 0) -> ImageSet:
    """`count` tensors made from scikit-image's photos with random crops, flips and scales.

    Not representative of any real deployment: say so wherever it is used (`note`).
    `offset` selects a disjoint stream of augmentations (calibration 0, evaluation 1).
    """
    from PIL import Image

    photos = skimage_photos()
    rng = np.random.default_rng(seed * 1000 + offset)
    size = data.input_size[1]
    tensors, names = [], []
    for i in range(count):
        name, img = photos[(i + offset * 7) % len(photos)]
        w, h = img.size
        s = rng.uniform(0.35, 1.0)
        cw, ch = max(16, int(w * s)), max(16, int(h * s))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        tensors.append(preprocess(crop, size, data.interpolation, data.crop_pct, data.mean, data.std))
        names.append(f"skimage:{name}#{offset}.{i}")
    return ImageSet(np.stack(tensors), names, [], representative=False,
                    note="built-in scikit-image photos with augmentation: NOT representative of your data")
