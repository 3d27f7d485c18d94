"""A trained fixture, so that accuracy means something on machines without pretrained weights.

mobilevit_xxs (10 classes) trained from scratch on scikit-learn's bundled 8x8 digits, upscaled
by THE preprocessing implementation (`repo_gen.data.preprocess`, MobileViT's timm data config) to
64x64. The training inputs are produced from the very PNG-equivalent 8-bit images that
`write_digit_folders` writes, so a build run with `--eval-dir` on those folders sees exactly the
distribution the model was trained on.

Reproducible: fixed split (seed 0, 30% held out, stratified), fixed torch seed, single-threaded
data path; the checkpoint (a plain `state_dict`, `torch.save`) is cached outside git under
`$REPO_GEN_CACHE` or `~/.cache/repo-gen/`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from repo_gen.log import logger
from repo_gen.models import DataConfig

MODEL = "mobilevit_xxs"
IMAGE_SIZE = 64
NUM_CLASSES = 10
SPLIT_SEED = 0
TEST_FRACTION = 0.3
CHECKPOINT_NAME = "digits_mobilevit_xxs.pth"


def cache_dir() -> Path:
    return Path(os.environ.get("REPO_GEN_CACHE", Path.home() / ".cache" / "repo-gen"))


def default_checkpoint() -> Path:
    return cache_dir() / CHECKPOINT_NAME


def digit_images(split: str) -> tuple[list, np.ndarray]:
    """(8-bit grayscale 8x8 PIL images, labels) of the `train` or `test` split."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"split {split!r}: choose train or test")
    d = load_digits()
    idx = np.arange(len(d.target))
    tr, te = train_test_split(idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=d.target)
    sel = tr if split == "train" else te
    imgs = [Image.fromarray(np.round(d.images[i] * (255.0 / 16.0)).astype(np.uint8), "L") for i in sel]
    return imgs, d.target[sel].astype(np.int64)


def digit_tensors(split: str, data: DataConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed [N, 3, 64, 64] float32 tensors and labels, via repo_gen.data.preprocess."""
    from repo_gen.data.preprocess import preprocess, to_rgb
    from repo_gen.models import get_model_spec

    data = data or get_model_spec(MODEL).data.with_size(IMAGE_SIZE)
    imgs, labels = digit_images(split)
    size = data.input_size[1]
    x = np.stack([preprocess(to_rgb(im), size, data.interpolation, data.crop_pct, data.mean, data.std) for im in imgs])
    return x, labels


def write_digit_folders(out_dir: Path, split: str = "test", count: int | None = None) -> Path:
    """Write `split` digits as PNG class folders `out_dir/<digit>/<index>.png` (for --eval-dir/--calib-dir).

    Args:
        count: first `count` images of the split; None writes all of them.
    """
    imgs, labels = digit_images(split)
    out_dir = Path(out_dir)
    for i, (im, lbl) in enumerate(zip(imgs, labels, strict=True)):
        if count is not None and i >= count:
            break
        d = out_dir / str(int(lbl))
        d.mkdir(parents=True, exist_ok=True)
        im.save(d / f"{split}_{i:04d}.png")
    return out_dir


def train_digits(out: Path | None = None, epochs: int = 6, batch: int = 64, seed: int = 0,
                 threads: int | None = None) -> dict:
    """Train the fixture and save its state_dict to `out` (None: `default_checkpoint()`).

    Returns a summary with the held-out top-1 accuracy (in %) and the training time.
    """
    import timm
    import torch
    import torch.nn.functional as F

    out = Path(out) if out is not None else default_checkpoint()
    torch.manual_seed(seed)
    torch.set_num_threads(threads or min(2, len(os.sched_getaffinity(0))))
    xtr, ytr = digit_tensors("train")
    xte, yte = digit_tensors("test")
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)
    model = timm.create_model(MODEL, pretrained=False, num_classes=NUM_CLASSES)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.05)
    steps_per_epoch = -(-len(xtr) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for s in range(steps_per_epoch):
            ix = perm[s * batch : (s + 1) * batch]
            xb = xtr_t[ix]
            # Augmentation: random shifts of up to 4 px (one shift per batch keeps it cheap).
            dx, dy = (int(v) for v in torch.randint(-4, 5, (2,), generator=gen))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(xb), ytr_t[ix], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(ix)
        logger.info(f"digits epoch {epoch + 1}/{epochs}: loss {total / len(xtr):.4f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(torch.from_numpy(xte[i : i + 128])) for i in range(0, len(xte), 128)])
    top1 = float((logits.argmax(1).numpy() == yte).mean() * 100)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(out)
    summary = {"checkpoint": str(out), "top1": top1, "n_test": int(len(yte)), "epochs": epochs,
               "train_s": round(time.perf_counter() - t0, 1)}
    logger.info(f"digits fixture: held-out top-1 {top1:.2f}% on {len(yte)} images -> {out}")
    return summary


def ensure_digits_checkpoint(path: Path | None = None, **train_kwargs) -> Path:
    """The cached fixture checkpoint, training it first when missing (a few minutes on 2 cores)."""
    path = Path(path) if path is not None else default_checkpoint()
    if not path.is_file():
        train_digits(path, **train_kwargs)
    return path
