"""Registry of detectors: variants are rows, not code paths (timm's layout).

Why the input size must be a multiple of 64: the backbone's last MobileViT block runs at stride 32
and unfolds 2x2 patches, so H/32 and W/32 must be even (otherwise timm interpolates in front of
every transformer block). The SSDLite feature pyramid then has maps at strides 16, 32, 64, 128, 256.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from repo_gen.errors import UserError

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
SIZE_MULTIPLE = 64
DEFAULT_SIZE = 320


@dataclass(frozen=True)
class DetectorSpec:
    """One buildable detector.

    Attributes:
        name: repo-gen's name (prefix of every Triton model built from it).
        backbone: timm MobileViT name (built with features_only).
        extra_channels: output channels of the extra SSDLite blocks (each halves the last map: strides 64, ...).
        aspect_ratios: per feature map, torchvision DefaultBoxGenerator ratios (each r adds r and 1/r).
        params_m: backbone parameters in millions (documentation).
        out_indices: timm feature indices taken from the backbone (3, 4: strides 16 and 32; 2 adds stride 8).
    """

    name: str
    backbone: str
    extra_channels: tuple[int, ...] = (256, 128, 128)
    aspect_ratios: tuple[tuple[int, ...], ...] = ((2,), (2, 3), (2, 3), (2,), (2,))
    min_ratio: float = 0.1
    max_ratio: float = 0.9
    default_size: int = DEFAULT_SIZE
    params_m: float = 0.0
    out_indices: tuple[int, ...] = (3, 4)

    def layout(self) -> dict:
        """The feature maps and default boxes (LAYOUT_FIELDS) as plain lists: what a checkpoint records."""
        return {f: _plain(getattr(self, f)) for f in LAYOUT_FIELDS}

    def with_layout(self, layout: dict, source: str = "layout") -> DetectorSpec:
        """This spec with a recorded layout applied (a checkpoint trained with other feature maps / boxes)."""
        unknown = sorted(set(layout) - set(LAYOUT_FIELDS))
        try:
            if unknown:
                raise ValueError(f"unknown fields {unknown}")
            new = dataclasses.replace(self, **{k: _tuples(v) for k, v in layout.items()})
            if not new.out_indices or any(not 0 <= i <= 4 for i in new.out_indices) or \
                    len(new.aspect_ratios) != len(new.out_indices) + len(new.extra_channels) or \
                    not 0 < new.min_ratio < new.max_ratio <= 1:
                raise ValueError("feature indices must be in 0..4, one aspect-ratio list per feature map, "
                                 "0 < min_ratio < max_ratio <= 1")
        except (TypeError, ValueError) as e:
            raise UserError(f"{source}: not a valid {self.name} layout ({e}); pass a checkpoint saved by "
                            "repo-gen's detector training") from e
        return new


# What may differ between checkpoints of one detector: the feature maps and the default boxes.
LAYOUT_FIELDS = ("out_indices", "extra_channels", "aspect_ratios", "min_ratio", "max_ratio")


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, tuple | list) else v


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list | tuple) else v


_REGISTRY: dict[str, DetectorSpec] = {}


def _register(spec: DetectorSpec) -> None:
    if not _NAME_RE.match(spec.name):
        raise ValueError(f"bad detector name in registry: {spec.name!r}")
    _REGISTRY[spec.name] = spec


for _name, _extra, _params in (
    ("ssdlite_mobilevit_xxs", (192, 128, 128), 1.27),
    ("ssdlite_mobilevit_xs", (256, 128, 128), 2.32),
    ("ssdlite_mobilevit_s", (256, 256, 128), 5.58),
):
    _register(DetectorSpec(_name, _name.removeprefix("ssdlite_"), _extra, params_m=_params))


def list_detectors() -> list[str]:
    return sorted(_REGISTRY)


def is_detector(name: str) -> bool:
    return name in _REGISTRY


def get_detector_spec(name: str) -> DetectorSpec:
    if name not in _REGISTRY:
        raise UserError(f"--model {name!r}: unknown detector; choose one of: {', '.join(list_detectors())}")
    return _REGISTRY[name]


def check_size(size: int, flag: str = "--image-size") -> int:
    """The input size, or a UserError naming the nearest valid sizes."""
    if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
        lo = max(SIZE_MULTIPLE, size // SIZE_MULTIPLE * SIZE_MULTIPLE)
        raise UserError(
            f"{flag} {size}: a MobileViT-SSDLite input must be a multiple of {SIZE_MULTIPLE} (the stride-32 "
            f"block unfolds 2x2 patches); pass {lo} or {lo + SIZE_MULTIPLE}"
        )
    return size
