"""Calibration and evaluation image sets for the precision stage.

Both go through `repo_gen.data.images` (THE preprocessing: timm's data config of the model), and
are disjoint by construction: calibration is `--calib-dir` (or built-in photos, augmentation
stream 0); evaluation is `--eval-dir` (or built-in photos, stream 1). When a user passes the same
folder to both, the overlap is reported, not hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repo_gen.data.images import ImageSet, builtin_photos, list_images, load_dir, load_files
from repo_gen.errors import UserError
from repo_gen.labels import Labels, class_index
from repo_gen.log import logger, warn_once
from repo_gen.models import DataConfig


@dataclass
class LabeledSet:
    """An evaluation set; `labels` is None when the folder has no class subfolders."""

    images: ImageSet
    labels: np.ndarray | None = None
    class_folders: list[str] = field(default_factory=list)

    @property
    def tensors(self) -> np.ndarray:
        return self.images.tensors


def load_calibration(calib_dir: Path | None, data: DataConfig, count: int, seed: int = 0) -> ImageSet:
    """`count` preprocessed calibration images from `calib_dir` (recursive), or built-in photos.

    Raises:
        UserError: the folder is missing, holds no image files, or none of them decodes.
    """
    if calib_dir is None:
        s = builtin_photos(data, count, seed=seed, offset=0)
        logger.warning(f"calibration: no --calib-dir; using {count} augmented scikit-image photos ({s.note})")
        return s
    calib_dir = Path(calib_dir)
    if not calib_dir.is_dir():
        raise UserError(f"--calib-dir {calib_dir}: not a directory; pass a folder of JPEG/PNG/WebP images")
    files = list_images(calib_dir)
    if not files:
        raise UserError(
            f"--calib-dir {calib_dir}: no image files (.jpg/.jpeg/.png/.webp, searched recursively); "
            "put calibration images there or leave --calib-dir out to use the built-in photos"
        )
    s = _load_spread(calib_dir, files, data, count, seed)
    if s.skipped:
        logger.warning(
            f"--calib-dir {calib_dir}: skipped {len(s.skipped)} unreadable file(s), e.g. "
            + "; ".join(f"{n}: {r}" for n, r in s.skipped[:3])
        )
    if len(s.names) == 0:
        raise UserError(
            f"--calib-dir {calib_dir}: none of the {len(files)} image files could be decoded "
            f"(e.g. {s.skipped[0][0]}: {s.skipped[0][1]}); pass readable JPEG/PNG/WebP images"
        )
    if len(s.names) < count:
        warn_once(
            f"--calib-dir {calib_dir}: {len(s.names)} readable images, fewer than --calib-count {count}; "
            f"calibrating with {len(s.names)}"
        )
        s.note = f"{len(s.names)} images, fewer than the {count} requested"
    return s


def _load_spread(root: Path, files: list[Path], data: DataConfig, count: int, seed: int) -> ImageSet:
    """Up to `count` decodable images of `files` in a seeded random order, so that a folder sorted
    by class (`0/..., 1/..., ...`) still gives every class to a small `--calib-count`; unreadable
    files met on the way are skipped, counted and named."""
    order = np.random.default_rng(seed).permutation(len(files)) if len(files) > count else range(len(files))
    return load_files(root, (files[i] for i in order), data, count)


def load_eval(eval_dir: Path | None, data: DataConfig, count: int, labels: Labels, seed: int = 0) -> LabeledSet:
    """Evaluation images: `eval_dir` (class subfolders give labels) or built-in photos (no labels).

    Class subfolders are named by class name, class index (`0`, `1`, ...) or, for ImageNet labels,
    WordNet synset (`n01443537`): `repo_gen.labels.class_index` decides. Images directly in `eval_dir` (no subfolders) are evaluated
    for fidelity only. Up to `count` images are taken, spread round-robin over the classes.

    Raises:
        UserError: missing/empty folder, or class folders that do not match the model's labels.
    """
    if eval_dir is None:
        return LabeledSet(builtin_photos(data, count, seed=seed, offset=1))
    eval_dir = Path(eval_dir)
    if not eval_dir.is_dir():
        raise UserError(f"--eval-dir {eval_dir}: not a directory; pass a folder of class subfolders of images")
    subdirs = sorted(p for p in eval_dir.iterdir() if p.is_dir() and list_images(p))
    if not subdirs:
        s = load_dir(eval_dir, data, count)
        if not s.names:
            raise UserError(f"--eval-dir {eval_dir}: no readable images (.jpg/.jpeg/.png/.webp) found")
        return LabeledSet(s)
    index = class_index([d.name for d in subdirs], labels, "--eval-dir", eval_dir)
    # Round-robin over classes, so a small --eval-count still covers every class.
    per_class = {d.name: list_images(d) for d in subdirs}
    picked: list[tuple[Path, int]] = []
    depth = 0
    while len(picked) < count and any(depth < len(v) for v in per_class.values()):
        for name, files in per_class.items():
            if depth < len(files) and len(picked) < count:
                picked.append((files[depth], index[name]))
        depth += 1
    loaded = load_files(eval_dir, [path for path, _ in picked], data)
    label_of = {str(path.relative_to(eval_dir)): lbl for path, lbl in picked}
    if not loaded.names:
        raise UserError(f"--eval-dir {eval_dir}: none of the images could be decoded (e.g. {loaded.skipped[0][0]})")
    if loaded.skipped:
        logger.warning(f"--eval-dir {eval_dir}: skipped {len(loaded.skipped)} unreadable file(s), e.g. {loaded.skipped[0][0]}")
    targets = np.asarray([label_of[n] for n in loaded.names], np.int64)
    return LabeledSet(loaded, targets, [d.name for d in subdirs])


def overlap(calib: ImageSet, ev: ImageSet, calib_dir: Path | None, eval_dir: Path | None) -> int:
    """Number of evaluation images that are also calibration images (same resolved file)."""
    if calib_dir is None or eval_dir is None:
        return 0
    a = {(Path(calib_dir) / n).resolve() for n in calib.names}
    b = {(Path(eval_dir) / n).resolve() for n in ev.names}
    return len(a & b)
