"""The `--labels` and preprocessing flags: one argument group, its parsing, and the BuildConfig fields it fills."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "labels and preprocessing",
        "class names: --labels, else names stored in the checkpoint, else the class folders of --eval-dir/--calib-dir, "
        "else ImageNet's for 1000 classes, else class_<i>; preprocessing: these flags, else the checkpoint's "
        "pretrained_cfg, else timm's config of the model",
    )
    g.add_argument("--labels", type=Path, metavar="FILE", help="class names, UTF-8, one per line in output order")
    g.add_argument("--mean", metavar="R,G,B", help="normalization mean (one number for all channels also works)")
    g.add_argument("--std", metavar="R,G,B", help="normalization std, non-zero")
    g.add_argument("--interpolation", choices=["bicubic", "bilinear", "nearest", "lanczos"], help="resize interpolation")
    g.add_argument("--crop-pct", type=float, metavar="F", help="center crop fraction in (0, 1]")

