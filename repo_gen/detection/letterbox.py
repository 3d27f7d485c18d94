"""Image -> detector input (letterbox) and detections back to image coordinates: the one place for both.

The letterbox keeps the aspect ratio: resize so the longer side fills `size`, pad the rest with
gray, centred. `Letterbox` records the exact per-axis scale and offsets, so mapping a box back is
`(x - pad_x) / scale_x`, clipped to the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PAD_VALUE = 114  # gray padding (the usual detector letterbox value), in 8-bit units


@dataclass(frozen=True)
class Letterbox:
    """How one image was placed in the model's square input."""

    width: int  # original image width
    height: int
    scale_x: float  # resized width / original width
    scale_y: float
    pad_x: int  # left padding in input pixels
    pad_y: int

    def as_array(self) -> np.ndarray:
        """[6] float32 (width, height, scale_x, scale_y, pad_x, pad_y): what the preprocess model passes on."""
        return np.array([self.width, self.height, self.scale_x, self.scale_y, self.pad_x, self.pad_y], np.float32)

    @staticmethod
    def from_array(a: np.ndarray) -> Letterbox:
        w, h, sx, sy, px, py = (float(v) for v in a)
        return Letterbox(int(w), int(h), sx, sy, int(px), int(py))


def letterbox(img: Any, size: int) -> tuple[np.ndarray, Letterbox]:
    """RGB PIL image -> ([3, size, size] float32 in [0, 1], its Letterbox). MobileViT: mean 0, std 1."""
    from PIL import Image

    w, h = img.size
    s = min(size / w, size / h)
    nw, nh = max(1, min(size, round(w * s))), max(1, min(size, round(h * s)))
    canvas = Image.new("RGB", (size, size), (PAD_VALUE,) * 3)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas.paste(img.convert("RGB").resize((nw, nh), Image.Resampling.BILINEAR), (px, py))
    x = np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return np.ascontiguousarray(x), Letterbox(w, h, nw / w, nh / h, px, py)


def to_image_boxes(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """[n, 4] x1,y1,x2,y2 input pixels -> original image pixels, clipped to the image."""
    out = np.empty_like(boxes, dtype=np.float32)
    out[:, 0::2] = (boxes[:, 0::2] - lb.pad_x) / lb.scale_x
    out[:, 1::2] = (boxes[:, 1::2] - lb.pad_y) / lb.scale_y
    out[:, 0::2] = np.clip(out[:, 0::2], 0, lb.width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, lb.height)
    return out


def to_input_boxes(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Original image pixels -> input pixels (training targets)."""
    out = np.empty_like(boxes, dtype=np.float32)
    out[:, 0::2] = boxes[:, 0::2] * lb.scale_x + lb.pad_x
    out[:, 1::2] = boxes[:, 1::2] * lb.scale_y + lb.pad_y
    return out
