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
INTERPOLATIONS = tuple(_INTERP)

# Memory bound: no image is ever decoded to more than MAX_PIXELS pixels (40 MP: at most 160 MB
# for RGBA, 120 MB for RGB, before the conversions and the resize, which are smaller than that).
# The pixel count is read from the header, before any decoding:
#   * JPEGs above DRAFT_PIXELS are decoded at a reduced DCT scale (Pillow's draft, 1/2 .. 1/8),
#     keeping at least 1024 px per side when below MAX_PIXELS and taking 1/8 above it; a
#     10,000 x 10,000 JPEG is thus decoded to 1250 x 1250 (4.7 MB). Pillow's own bomb check
#     (Image.open) still rejects anything above 2 x Image.MAX_IMAGE_PIXELS (about 179 MP).
#   * any other format above MAX_PIXELS is rejected without decoding a single pixel.
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
        dw, dh = img.size  # after draft: the size that will actually be decoded
        if dw * dh > MAX_PIXELS:
            raise ImageError(f"image is {w}x{h} pixels, above the {MAX_PIXELS:,} pixel limit; downscale it first")
        img.load()
    except ImageError:
        raise
    except Image.UnidentifiedImageError as e:
        raise ImageError("not an image Pillow can read (JPEG, PNG, WebP, BMP, GIF, TIFF, ...)") from e
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large: {e}") from e
    except Exception as e:  # PIL raises many types for bad data
        raise ImageError(f"cannot decode image ({type(e).__name__}: {e}); the file is corrupt or truncated") from e
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
