"""A trained detection fixture from real pixels, offline: digits pasted onto scikit-image photos.

Scenes: a random crop of one of scikit-image's bundled photos (random aspect, 160-256 px a side)
with 1-3 handwritten digits from scikit-learn's digits set pasted at random scales and positions,
in a colour that contrasts with the photo. A digit's box is the extent of the pixels its mask
covers (alpha >= ALPHA_MIN), so the ground truth is exact. Train scenes use the digits' train split and
even seeds; test scenes use the held-out digits and a disjoint seed stream.

`train_detector_fixture` trains ssdlite_mobilevit_xxs at FIXTURE_SIZE on one CPU core in minutes;
the checkpoint is cached under the repo-gen cache (XDG_CACHE_HOME/repo-gen).

The fixture's feature maps and default boxes (FIXTURE_LAYOUT) are not the registry's 320 px COCO layout:
with strides 16-256 and boxes of 0.1-0.9 of the input, the digits here (about 20-50 x 30-70 px at 128 px,
taller than wide) matched 1.7 default boxes per scene at IoU >= 0.5 (median best IoU 0.49), too few
positives to learn from. A stride-8 map (timm feature 2), one extra block and boxes of 0.15-0.6 of the
input give about 10 per scene (at any input size: the boxes scale with it). The checkpoint records its
layout, so `repo-gen build` rebuilds the same model (repo_gen.detection.model.load_detector).
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repo_gen.detection.letterbox import letterbox, to_input_boxes
from repo_gen.detection.metrics import Detections, MapResult
from repo_gen.log import logger

MODEL = "ssdlite_mobilevit_xxs"
# 192 px: the digits are then about 30-100 px, nearer the 64 px the digits classifier (the backbone's start)
# saw; at 128 px the same recipe reached held-out mAP@.5 26 instead of 39 (benchmarks/RESULTS.md).
FIXTURE_SIZE = 192
NUM_CLASSES = 10
LABELS = [str(d) for d in range(10)]
ALPHA_MIN = 0.25
SCENE_SIDE = (160, 257)  # scene width / height range in pixels (upper bound exclusive)
DIGIT_SIDE = (0.3, 0.6)  # pasted digit side as a fraction of the scene's shorter side
# v2: larger digits, backbone from the digits classifier with its early stages frozen (a new recipe: a
# stale v1 cache must not be reused). v3: FIXTURE_LAYOUT, background-prior head init, one thread.
CHECKPOINT_NAME = "detect_ssdlite_mobilevit_xxs_digits_v3.pth"
FIXTURE_LAYOUT = {"out_indices": (2, 3, 4), "extra_channels": (128,), "aspect_ratios": ((2,), (2,), (2,), (2,)),
                  "min_ratio": 0.15, "max_ratio": 0.6}
TRAIN_STEPS = 400
TRAIN_BATCH = 8
TRAIN_LR = 1.5e-2
TRAIN_THREADS = 1  # two threads on a 2-core machine that runs anything else spin: 1-10 CPU s a step instead of 0.3
BACKGROUND_PRIOR = 0.99  # the classification bias starts every default box at p(background) = 0.99
FREEZE_STAGES = 4  # stem + stages 0-2 (strides 2-8) stay as the digits classifier trained them
_SEED_STREAM = {"train": 0, "test": 1_000_003, "calib": 2_000_003}


@dataclass
class Scene:
    image: Any  # RGB PIL image
    truth: Detections  # image pixels


def default_checkpoint() -> Path:
    from repo_gen.tools import cache_dir

    return Path(os.environ.get("REPO_GEN_CACHE", cache_dir())) / CHECKPOINT_NAME


@functools.cache
def _digits(split: str) -> tuple[list[np.ndarray], np.ndarray]:
    # Cached: training draws a fresh batch of scenes every step.
    from repo_gen.fixtures.digits import digit_images

    imgs, labels = digit_images("train" if split == "train" else "test")
    return [np.asarray(im) for im in imgs], labels


def make_scenes(split: str, count: int, seed: int = 0) -> list[Scene]:
    """`count` scenes of `split` ("train", "test" or "calib"; calib uses test digits, other photos crops)."""
    from PIL import Image

    from repo_gen.data.images import skimage_photos

    photos = skimage_photos()
    digits, labels = _digits(split)
    rng = np.random.default_rng(seed + _SEED_STREAM[split])
    scenes = []
    for _ in range(count):
        _, photo = photos[int(rng.integers(len(photos)))]
        w, h = (int(v) for v in rng.integers(*SCENE_SIDE, size=2))
        pw, ph = photo.size
        s = rng.uniform(0.3, 1.0) * min(pw / w, ph / h)
        cw, ch = int(w * s), int(h * s)
        x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        canvas = np.asarray(photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BILINEAR),
                            dtype=np.float32).copy()
        boxes: list[list[float]] = []
        classes: list[int] = []
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(len(digits)))
            side = int(rng.uniform(*DIGIT_SIDE) * min(w, h))
            alpha = np.asarray(Image.fromarray(digits[k]).resize((side, side), Image.Resampling.BILINEAR),
                               np.float32) / 255.0
            ys, xs = np.nonzero(alpha >= ALPHA_MIN)
            if len(xs) == 0:
                continue
            for _try in range(10):
                px, py = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                box = [px + xs.min(), py + ys.min(), px + xs.max() + 1, py + ys.max() + 1]
                if all(_iou(box, b) < 0.1 for b in boxes):
                    break
            else:
                continue
            region = canvas[py : py + side, px : px + side]
            # Dark ink on bright ground and the reverse, tinted at random: visible on any photo.
            bright = region.mean() > 127
            ink = rng.uniform(0, 70, 3) if bright else rng.uniform(185, 255, 3)
            a = alpha[..., None]
            canvas[py : py + side, px : px + side] = region * (1 - a) + ink * a
            boxes.append([float(v) for v in box])
            classes.append(int(labels[k]))
        img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
        truth = Detections(np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(classes), np.float32),
                           np.array(classes, np.int64))
        scenes.append(Scene(img, truth))
    return scenes


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def write_scenes(out_dir: Path, split: str, count: int, seed: int = 0) -> Path:
    """Write scenes as PNG files plus `annotations.json` (COCO format, category ids = digit + 1)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    anns: list[dict] = []
    for i, sc in enumerate(make_scenes(split, count, seed)):
        name = f"{split}_{i:04d}.png"
        sc.image.save(out_dir / name)
        images.append({"id": i + 1, "file_name": name, "width": sc.image.width, "height": sc.image.height})
        for b, c in zip(sc.truth.boxes, sc.truth.classes, strict=True):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                         "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0})
    cats = [{"id": k + 1, "name": name} for k, name in enumerate(LABELS)]
    (out_dir / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                          "categories": cats}, indent=1))
    return out_dir


def read_scenes(directory: Path) -> tuple[list[Path], list[Detections]]:
    """(image paths, ground truth in image pixels, 0-based classes) of a folder with annotations.json."""
    from repo_gen.errors import UserError

    ann = Path(directory) / "annotations.json"
    if not ann.is_file():
        raise UserError(f"--eval-dir {directory}: no annotations.json (COCO format) in it; "
                        "write one or create the folder with scripts/train_detection_fixture.py --write-eval DIR")
    try:
        d = json.loads(ann.read_text())
        by_img: dict[int, list[dict]] = {im["id"]: [] for im in d["images"]}
        for a in d["annotations"]:
            by_img[a["image_id"]].append(a)
        paths, truth = [], []
        for im in d["images"]:
            rows = by_img[im["id"]]
            b = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in rows], np.float32).reshape(-1, 4)
            c = np.array([a["category_id"] - 1 for a in rows], np.int64)
            paths.append(Path(directory) / im["file_name"])
            truth.append(Detections(b, np.ones(len(c), np.float32), c))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"--eval-dir {directory}: annotations.json is not COCO detection format ({e}); fix it") from e
    return paths, truth


def _batch(scenes: list[Scene], size: int) -> tuple[Any, list[dict]]:
    import torch

    xs, targets = [], []
    for sc in scenes:
        x, lb = letterbox(sc.image, size)
        xs.append(torch.from_numpy(x))
        targets.append({"boxes": torch.from_numpy(to_input_boxes(sc.truth.boxes, lb)),
                        "labels": torch.from_numpy(sc.truth.classes + 1)})  # 0 is background in torchvision
    return xs, targets


def evaluate_torch(model: Any, scenes: list[Scene], score_thresh: float = 0.01, iou_thresh: float = 0.45,
                   max_det: int = 100) -> MapResult:
    """mAP of the PyTorch detector on `scenes` (image coordinates; the reference NMS)."""
    import torch

    from repo_gen.detection.letterbox import to_image_boxes
    from repo_gen.detection.metrics import coco_map
    from repo_gen.detection.model import DetectorCore, reference_detections

    core = DetectorCore(model).eval()
    size = model.repo_gen_info.image_size
    preds = []
    with torch.inference_mode():
        for i in range(0, len(scenes), 32):
            chunk = [letterbox(sc.image, size) for sc in scenes[i : i + 32]]
            boxes, scores = core(torch.from_numpy(np.stack([x for x, _ in chunk])))
            for d, (_, lb) in zip(reference_detections(boxes, scores, score_thresh, iou_thresh, max_det), chunk,
                                  strict=True):
                preds.append(Detections(to_image_boxes(d["boxes"].numpy(), lb), d["scores"].numpy(),
                                        d["classes"].numpy()))
    return coco_map([s.truth for s in scenes], preds, model.repo_gen_info.num_classes)


def train_detector_fixture(out: Path | None = None, steps: int = TRAIN_STEPS, batch: int = TRAIN_BATCH, seed: int = 0,
                           threads: int | None = None, eval_images: int = 200, progress: bool = True,
                           max_seconds: float | None = None, init_backbone: Path | None = None,
                           lr: float = TRAIN_LR, warmup: float = 0.1,
                           freeze: int = FREEZE_STAGES) -> dict:
    """Train ssdlite_mobilevit_xxs on fresh train scenes; save to `out` (None: `default_checkpoint()`).

    Args:
        eval_images: held-out scenes for the final mAP; 0 skips the evaluation.
        max_seconds: stop early (and still save) after this long; None trains all `steps`.
        init_backbone: a timm mobilevit_xxs classifier checkpoint (e.g. the digits classifier fixture) whose
            weights start the backbone; None starts from random weights.
        threads: torch threads (default TRAIN_THREADS).
    Returns a summary: held-out mAP@[.5:.95] / mAP@.5 in %, training wall and CPU seconds.
    """
    import torch

    from repo_gen.detection.model import build_detector, save_detector

    out = Path(out) if out is not None else default_checkpoint()
    torch.manual_seed(seed)
    torch.set_num_threads(threads or TRAIN_THREADS)
    model = build_detector(fixture_spec(), NUM_CLASSES, FIXTURE_SIZE)
    init_background_prior(model, BACKGROUND_PRIOR)
    if init_backbone is not None:
        load_backbone(model, Path(init_backbone))
    # Frozen random weights would only hurt: freezing applies to a classifier-initialised backbone.
    frozen = freeze_early_stages(model, freeze if init_backbone is not None else 0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.02)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=warmup)
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    from rich.progress import Progress

    from repo_gen.log import console

    with Progress(console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("training the detection fixture", total=steps)
        done = 0
        for step_i in range(steps):
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                logger.warning(f"detection fixture: stopped after {step_i} of {steps} steps (--max-seconds)")
                break
            xs, targets = _batch(make_scenes("train", batch, seed=seed * 1_000_000 + step_i * batch), FIXTURE_SIZE)
            losses = model(xs, targets)
            loss = losses["bbox_regression"] + losses["classification"]
            for m in frozen:
                m.eval()  # frozen stages keep their BatchNorm statistics
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            bar.update(task, advance=1, description=f"training the detection fixture (loss {loss.item():.3f})")
            if (step_i + 1) % 50 == 0:
                logger.info(f"detection fixture step {step_i + 1}/{steps}: loss {loss.item():.3f} "
                            f"({time.perf_counter() - t0:.0f} s)")
    model.eval()
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    save_detector(model, out)
    summary: dict = {"checkpoint": str(out), "eval_images": eval_images, "steps": done, "batch": batch,
                     "image_size": FIXTURE_SIZE, "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu_s, 1),
                     "threads": torch.get_num_threads()}
    if eval_images:
        res = evaluate_torch(model, make_scenes("test", eval_images))
        summary.update(map=round(res.map, 2), map50=round(res.map50, 2))
        logger.info(f"detection fixture: held-out mAP {res.map:.1f} / mAP@.5 {res.map50:.1f} on {eval_images} "
                    f"scenes ({train_s:.0f} s training, {train_cpu_s:.0f} CPU s) -> {out}")
    return summary


def fixture_spec() -> Any:
    """The registry's ssdlite_mobilevit_xxs with the fixture's feature maps and default boxes."""
    from repo_gen.detection.specs import get_detector_spec

    return get_detector_spec(MODEL).with_layout(FIXTURE_LAYOUT)


def init_background_prior(model: Any, prior: float) -> None:
    """Start the softmax of every default box at p(background) = `prior`, the objects sharing the rest.

    The focal-loss paper's prior init, for softmax: with zero-mean weights the logits are the biases.
    Without it every box starts at p(background) = 1 / (C + 1); measured on this fixture (128 px, 400 steps):
    held-out mAP@.5 5.7 without it, 26.4 with it (benchmarks/RESULTS.md, Detection).
    """
    import math

    import torch

    n = model.repo_gen_info.num_classes + 1
    with torch.no_grad():
        for block in model.head.classification_head.module_list:
            conv = block[-1]  # SSDLite head: depthwise conv block, then the 1x1 prediction conv
            bias = conv.bias.view(-1, n)
            bias.zero_()
            bias[:, 0] = math.log(prior / (1 - prior) * (n - 1))


def load_backbone(model: Any, path: Path) -> int:
    """Copy a timm MobileViT classifier checkpoint's weights into the detector backbone; returns tensors copied.

    timm's features_only wrapper names stages `stages_<i>` where the classifier has `stages.<i>`.
    """
    import re

    from repo_gen.torch.loader import read_state_dict

    state = read_state_dict(path)
    body = model.backbone.body
    own = body.state_dict()
    mapped = {re.sub(r"^stages_(\d+)\.", r"stages.\1.", k): k for k in own}
    take = {k: state[src] for src, k in mapped.items() if src in state and state[src].shape == own[k].shape}
    if len(take) < len(own) // 2:
        from repo_gen.errors import UserError

        raise UserError(f"--init-backbone {path}: only {len(take)} of {len(own)} backbone tensors match; pass a "
                        f"timm {get_backbone_name()} classifier checkpoint")
    body.load_state_dict(take, strict=False)
    logger.info(f"backbone: {len(take)} of {len(own)} tensors from {path}")
    return len(take)


def freeze_early_stages(model: Any, count: int) -> list[Any]:
    """Stop training the backbone's stem and first `count` - 1 stages; returns the frozen modules.

    Why: started from the digits classifier, the high-resolution early stages already see strokes; not
    training them skips most of the backward pass, which is what limits the steps on 2 cores.
    """
    if count <= 0:
        return []
    body = model.backbone.body
    frozen = [body.stem] + [getattr(body, f"stages_{i}") for i in range(count - 1)]
    for m in frozen:
        m.requires_grad_(False)
    return frozen


def get_backbone_name() -> str:
    from repo_gen.detection.specs import get_detector_spec

    return get_detector_spec(MODEL).backbone


def ensure_detector_checkpoint(path: Path | None = None, **train_kwargs: Any) -> Path:
    """The cached fixture checkpoint, training it first when missing (minutes on 2 cores).

    The backbone starts from the digits classifier fixture (trained and cached first when missing; the
    classifier tests use the same cache) unless `init_backbone` is passed.
    """
    path = Path(path) if path is not None else default_checkpoint()
    if not path.is_file():
        if "init_backbone" not in train_kwargs:
            from repo_gen.fixtures.digits import ensure_digits_checkpoint

            train_kwargs["init_backbone"] = ensure_digits_checkpoint()
        train_detector_fixture(path, **train_kwargs)
    return path
