"""Preprocess an image exactly as timm's eval transform for a model's data config.

This file is the ONE implementation used everywhere: calibration, evaluation, bench input
data, and (copied verbatim next to the generated model.py) the Triton ensemble's
preprocessing model. It therefore depends only on numpy and Pillow, never on repo_gen.

timm's eval transform for crop_mode "center" (timm.data.transforms_factory.transforms_imagenet_eval):
  scale_size = floor(img_size / crop_pct); Resize(scale_size) of the SHORTER side with the
  model's interpolation; CenterCrop(img_size); ToTensor (/255); Normalize(mean, std).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps

_INTERP = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

# Decompression-bomb bound: images above this many pixels are rejected instead of decoded.
# 10000 x 10000 RGB would need 300 MB decoded; this bound (about 40 MP) keeps one decoded image
# under about 120 MB; larger JPEGs are decoded with draft() at reduced scale first (see decode).
MAX_PIXELS = 40_000_000
DRAFT_PIXELS = 4 * 1024 * 1024


class ImageError(ValueError):
    """The bytes are not an image we can decode (corrupt, empty, unsupported, too large)."""


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded bytes (JPEG/PNG/WebP/BMP/...) to an RGB PIL image.

    Mode conversions: grayscale (L, I;16, I, F), palette (P), RGBA/LA (alpha composited on
    white), CMYK, YCbCr -> RGB. 16-bit images are scaled to 8-bit. EXIF orientation applied.
    Very large JPEGs are decoded at a reduced scale (PIL draft), which is exact for our use:
    the image is downscaled to a few hundred pixels anyway.
    """
    if not data:
        raise ImageError("empty input (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if img.format == "JPEG" and w * h > DRAFT_PIXELS:
            img.draft("RGB", (max(1, w // 8), max(1, h // 8)) if w * h > MAX_PIXELS else (1024, 1024))
        elif w * h > MAX_PIXELS:
            raise ImageError(f"image is {w}x{h} pixels, above the {MAX_PIXELS} pixel limit")
        img.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large: {e}") from e
    except Exception as e:  # PIL raises many types for bad data
        raise ImageError(f"cannot decode image: {type(e).__name__}: {e}") from e
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not reject an otherwise good image
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = (arr - arr.min()) / max(arr.max() - arr.min(), 1e-12) * 255.0
        img = Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img.convert("RGBA"), mask=img.convert("RGBA").split()[-1])
        return bg
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def preprocess(
    img: Image.Image,
    size: int,
    interpolation: str = "bicubic",
    crop_pct: float = 0.9,
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """RGB PIL image -> float32 [3, size, size], as timm's eval transform (center crop mode)."""
    scale = math.floor(size / crop_pct)
    w, h = img.size
    # torchvision Resize(int): the shorter side becomes `scale`, the other keeps the aspect ratio
    # (truncated, as torchvision's _compute_resized_output_size does).
    if w <= h:
        nw, nh = scale, int(scale * h / w)
    else:
        nw, nh = int(scale * w / h), scale
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), _INTERP[interpolation])
    # torchvision CenterCrop: top = round((h - size) / 2), left = round((w - size) / 2)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess_bytes(data: bytes, size: int, interpolation: str = "bicubic", crop_pct: float = 0.9,
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) -> np.ndarray:
    return preprocess(decode_image(data), size, interpolation, crop_pct, tuple(mean), tuple(std))
