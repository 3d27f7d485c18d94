"""The preprocessing a model expects, decided once per build: user flags > checkpoint > timm.

timm's own precedence (`timm.data.resolve_data_config`): arguments given by the user, then the
model's pretrained config, then defaults. Here the "model's pretrained config" is, in order, a
`pretrained_cfg` dict stored in the checkpoint (what a fine-tuning run saves next to its weights)
and the registry row, which carries timm's config for the architecture. The result is one
`DataConfig`, recorded in the manifest and used by calibration, evaluation, the preprocess model
and the clients (all through `repo_gen.data.preprocess`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from repo_gen.data.preprocess import INTERPOLATIONS
from repo_gen.errors import UserError
from repo_gen.models import DataConfig


@dataclass(frozen=True)
class DataOverrides:
    """Command-line values; None keeps the checkpoint's / timm's."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None
    image_size: int | None = None


def parse_triple(value: str | tuple[float, ...] | list[float] | None, flag: str) -> tuple[float, float, float] | None:
    """"0.485,0.456,0.406" (or one number for all three channels) -> a 3-tuple; None stays None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        nums = [float(v) for v in items]
    except ValueError as e:
        raise UserError(f"{flag} {value!r}: not numbers; give three comma-separated numbers (R,G,B) or one") from e
    if len(nums) == 1:
        nums *= 3
    if len(nums) != 3 or not all(math.isfinite(n) for n in nums):
        raise UserError(f"{flag} {value!r}: give three finite comma-separated numbers (R,G,B), or one for all")
    return (nums[0], nums[1], nums[2])


def _validate(cfg: DataConfig, origin: str, flagged: set[str]) -> DataConfig:
    """Reject values the preprocessing cannot use. A field in `flagged` came from its flag, any other from `origin`."""

    def where(flag: str, field: str) -> str:
        return flag if field in flagged else f"{origin} {field}"

    if any(s == 0 for s in cfg.std) or not all(math.isfinite(s) for s in cfg.std):
        raise UserError(f"{where('--std', 'std')} {','.join(map(str, cfg.std))}: every channel's std must be a finite "
                        "non-zero number (e.g. --std 0.229,0.224,0.225)")
    if not 0 < cfg.crop_pct <= 1:
        raise UserError(f"{where('--crop-pct', 'crop_pct')} {cfg.crop_pct}: must be in (0, 1] "
                        "(e.g. --crop-pct 0.875; 1 keeps the whole resized image)")
    if cfg.interpolation not in INTERPOLATIONS:
        raise UserError(f"{where('--interpolation', 'interpolation')} {cfg.interpolation!r}: choose one of "
                        f"{', '.join(INTERPOLATIONS)}")
    return cfg


def from_pretrained_cfg(base: DataConfig, pretrained_cfg: dict[str, Any] | None) -> DataConfig:
    """`base` with the fields a checkpoint's timm `pretrained_cfg` sets."""
    if not pretrained_cfg:
        return base
    p = pretrained_cfg
    try:
        size = p.get("input_size", base.input_size)
        cfg = DataConfig(
            (int(size[0]), int(size[1]), int(size[2])),
            str(p.get("interpolation", base.interpolation)),
            float(p.get("crop_pct", base.crop_pct)),
            str(p.get("crop_mode", base.crop_mode)),
            tuple(float(v) for v in p.get("mean", base.mean)),  # type: ignore[arg-type]
            tuple(float(v) for v in p.get("std", base.std)),  # type: ignore[arg-type]
        )
    except (TypeError, ValueError, IndexError) as e:
        raise UserError(
            f"--weights: the checkpoint's pretrained_cfg is malformed ({e}); fix it or override with "
            "--mean/--std/--interpolation/--crop-pct/--image-size"
        ) from e
    if len(cfg.mean) != 3 or len(cfg.std) != 3:
        raise UserError("--weights: the checkpoint's pretrained_cfg mean/std need 3 values (R,G,B); override with --mean/--std")
    return cfg


def resolve_data_config(base: DataConfig, pretrained_cfg: dict[str, Any] | None = None,
                        overrides: DataOverrides | None = None) -> DataConfig:
    """The model's data config: `overrides` > `pretrained_cfg` (from the checkpoint) > `base` (timm's)."""
    cfg = from_pretrained_cfg(base, pretrained_cfg)
    o = overrides or DataOverrides()
    size = o.image_size or cfg.input_size[1]
    cfg = DataConfig(
        (3, size, size),
        o.interpolation or cfg.interpolation,
        cfg.crop_pct if o.crop_pct is None else float(o.crop_pct),
        cfg.crop_mode,
        cfg.mean if o.mean is None else tuple(o.mean),  # type: ignore[arg-type]
        cfg.std if o.std is None else tuple(o.std),  # type: ignore[arg-type]
    )
    flagged = {k for k in ("std", "crop_pct", "interpolation") if getattr(o, k) is not None}
    return _validate(cfg, "--weights pretrained_cfg" if pretrained_cfg else "the model's default", flagged)
