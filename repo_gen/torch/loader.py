"""Load a timm model with weights from a checkpoint, timm's pretrained loader, or a fixed seed.

Checkpoints are always read with `torch.load(..., weights_only=True)`: a checkpoint is data,
and unpickling arbitrary objects would run code from the file.
"""

from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repo_gen.errors import MissingDependency, UserError
from repo_gen.fileio import file_sha256
from repo_gen.log import logger
from repo_gen.models import ModelSpec

# Keys under which training frameworks nest the state dict, in the order we prefer them
# (an EMA copy is what people deploy when it exists).
_NESTED_KEYS = ("state_dict_ema", "model_ema", "ema", "state_dict", "model_state_dict", "model", "module")
# Where a checkpoint may carry its class names and its timm data config (a dict saved next to the
# state dict: {"state_dict": ..., "class_names": [...], "pretrained_cfg": {...}}).
_CLASS_NAME_KEYS = ("class_names", "classes", "labels")


@dataclass
class LoadedModel:
    module: Any  # torch.nn.Module, typed loosely so importing this file needs no torch
    source: str  # "checkpoint", "pretrained" or "random"
    trained: bool
    checkpoint_sha256: str | None
    weights_path: str | None
    class_names: list[str] | None = None  # stored in the checkpoint, when it carries them
    pretrained_cfg: dict[str, Any] | None = None  # timm data config stored in the checkpoint
    source_format: str = "timm"  # "timm" or "cvnets" (Apple ml-cvnets keys, renamed on load)


@dataclass
class Checkpoint:
    state: dict[str, Any]
    class_names: list[str] | None = None
    pretrained_cfg: dict[str, Any] | None = None


def _import_torch():
    try:
        import timm
        import torch
    except ImportError as e:  # pragma: no cover - exercised only on broken installs
        raise MissingDependency(
            f"PyTorch/timm not importable ({e}); install them: pip install torch timm (or run scripts/setup.sh)"
        ) from e
    return torch, timm


def read_state_dict(path: Path) -> dict[str, Any]:
    """Return the tensor dict stored in `path`, unwrapping the usual nesting keys."""
    return read_checkpoint(path).state


def read_checkpoint(path: Path) -> Checkpoint:
    """The state dict stored in `path` (nesting keys unwrapped), with class names and data config if stored.

    Read once per file version: the build reads the head width, class names and data config before
    any stage runs (to validate them), and the loader reads the weights again later.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return _read_checkpoint(path, 0, 0)
    return _read_checkpoint(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=2)
def _read_checkpoint(path: Path, mtime_ns: int, size: int) -> Checkpoint:
    kind = _file_kind(path)
    if kind != "checkpoint":
        raise UserError(f"--weights {path}: {kind}; pass a .pth/.pt checkpoint saved with torch.save")
    damage = _zip_damage(path)
    if damage:
        raise UserError(
            f"--weights {path}: the checkpoint is corrupt or truncated ({damage}); "
            "pass an uncorrupted .pth/.pt file saved with torch.save (copy it again and compare its sha256)"
        )
    torch, _ = _import_torch()
    import argparse

    # ml-cvnets training checkpoints store their options as an argparse.Namespace: a plain
    # attribute bag whose construction runs no code of the file, so the safe loader may accept it.
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError) as e:
        raise UserError(
            f"--weights {path}: cannot read it as a PyTorch checkpoint, it is probably truncated or corrupt "
            f"({_first_line(e)}); pass an uncorrupted .pth/.pt file saved with torch.save"
        ) from e
    except Exception as e:  # pickle.UnpicklingError and friends: weights_only refused it
        raise UserError(
            f"--weights {path}: refused by the safe loader (weights_only=True: {_refusal_reason(e)}); it holds "
            "objects, not only tensors, and is not executed; re-save it with torch.save(model.state_dict())"
        ) from e
    names, data_cfg = (_stored_class_names(path, obj), _stored_pretrained_cfg(obj)) if isinstance(obj, dict) else (None, None)
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and _looks_like_state_dict(inner):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not _looks_like_state_dict(obj):
        raise UserError(
            f"--weights {path}: holds no state dict (expected tensors by parameter name, possibly under "
            f"one of the keys {', '.join(_NESTED_KEYS)}); pass a model checkpoint"
        )
    # DataParallel / DDP prefixes.
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return Checkpoint(obj, names, data_cfg)


def _stored_class_names(path: Path, obj: dict) -> list[str] | None:
    for key in _CLASS_NAME_KEYS:
        names = obj.get(key)
        if names is None:
            continue
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise UserError(
                f"--weights {path}: its '{key}' entry is not a list of strings; store class names as a list of str "
                "or pass --labels FILE"
            )
        return list(names)
    return None


def _stored_pretrained_cfg(obj: dict) -> dict[str, Any] | None:
    cfg = obj.get("pretrained_cfg")
    return dict(cfg) if isinstance(cfg, dict) else None


def _file_kind(path: Path) -> str:
    """"checkpoint" for a torch.save zip archive or a legacy pickle, else what the file is instead."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(b"PK") or head[:1] == b"\x80":  # zip archive (torch >= 1.6) or pickle protocol 2+
        return "checkpoint"
    return "is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)"


def _zip_damage(path: Path) -> str | None:
    """Check the CRC-32 of every record of a torch.save zip archive; None when sound (or not a zip).

    torch.load does not verify these checksums: damaged tensor bytes would load silently and
    become a model that serves garbage. Records saved without a CRC (torch's
    `set_crc32_options(False)`) are skipped.
    """
    with open(path, "rb") as f:
        if f.read(2) != b"PK":
            return None  # legacy (pickle) format: no checksums to verify
    if not zipfile.is_zipfile(path):
        return "not a readable zip archive: its end is missing or damaged"
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.CRC == 0 and info.file_size:
                    continue
                with z.open(info) as f:
                    while f.read(1 << 22):
                        pass
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"{_first_line(e)}"
    return None


def _refusal_reason(e: BaseException) -> str:
    # torch's message starts with advice to retry with weights_only=False, which would execute the
    # file: keep only the line that says what was refused.
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "unsupported global" in ln.lower() or ln.startswith("Unsupported"):
            return ln[:200]
    return type(e).__name__


def _looks_like_state_dict(d: dict) -> bool:
    torch, _ = _import_torch()
    return all(isinstance(k, str) for k in d) and any(isinstance(v, torch.Tensor) for v in d.values())


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def refuse_detector_state(state: dict[str, Any], weights: Path, model: str) -> None:
    """A UserError when `state` is a detector's (SSDLite head), which a classifier --model cannot load."""
    if any(k.startswith("head.classification_head.") for k in state):
        raise UserError(
            f"--weights {weights}: this is a detector checkpoint (SSDLite head keys head.classification_head.*), "
            f"not a {model} classifier; build it with --model ssdlite_mobilevit_xxs/_xs/_s"
        )


def head_width(state: dict[str, Any]) -> int | None:
    """Outputs of the classifier head of a timm or ml-cvnets MobileViT state dict; None without a head."""
    for key in ("head.fc.weight", "classifier.fc.weight"):
        w = state.get(key)
        if w is not None:
            return int(w.shape[0])
    return None


def load_model(
    spec: ModelSpec,
    weights: Path | None = None,
    pretrained: bool = False,
    seed: int = 0,
) -> LoadedModel:
    """Create `spec`'s timm model in eval mode with the requested weights.

    Args:
        weights: checkpoint path; None means no checkpoint.
        pretrained: use timm's pretrained loader (fails with a clear message when offline).
        seed: random-init seed, used when neither weights nor pretrained is given.
    The classifier width is the spec's (1000 for ImageNet) unless the checkpoint says otherwise.
    """
    ckpt = read_checkpoint(weights) if weights is not None else None  # a bad file fails before torch imports
    state = ckpt.state if ckpt is not None else None
    if state is not None and weights is not None:
        refuse_detector_state(state, weights, spec.name)
    torch, timm = _import_torch()
    source_format = "timm"
    if state is not None and weights is not None:
        from repo_gen.torch.cvnets import cvnets_to_timm, is_cvnets_state_dict

        if is_cvnets_state_dict(state):
            state = cvnets_to_timm(state, str(weights), spec.timm_name)
            source_format = "cvnets"
    n_cls = spec.num_classes
    if state is not None and "head.fc.weight" in state:
        # A fine-tuned checkpoint decides the classifier width (e.g. the 10-class digits fixture).
        n_cls = int(state["head.fc.weight"].shape[0])
        if n_cls < 2:
            raise UserError(
                f"--weights {weights}: the classifier head has {n_cls} output; a classifier needs at least 2 classes "
                "(a 1-output head is a regressor or a binary logit): pass a checkpoint of a multi-class classifier"
            )
    elif state is not None:
        raise UserError(
            f"--weights {weights}: no classifier head (no 'head.fc.weight'); pass a checkpoint of a whole "
            f"{spec.name} classifier, not a backbone"
        )
    if pretrained:
        try:
            module = timm.create_model(spec.timm_name, pretrained=True, num_classes=n_cls)
        except Exception as e:
            raise UserError(
                f"--pretrained: timm could not fetch weights for {spec.timm_name} ({_first_line(e)}); "
                "this machine is probably offline: download the checkpoint elsewhere and pass --weights PATH"
            ) from e
        return LoadedModel(module.eval(), "pretrained", True, None, None)

    torch.manual_seed(seed)
    module = timm.create_model(spec.timm_name, pretrained=False, num_classes=n_cls)
    if weights is None or state is None:
        logger.warning(
            f"{spec.name}: no --weights and no --pretrained: using RANDOM weights (seed {seed}); "
            "the model is UNTRAINED and its predictions are meaningless"
        )
        return LoadedModel(module.eval(), "random", False, None, None)

    mismatch = key_mismatch(module.state_dict(), state)
    if mismatch:
        raise UserError(
            f"--weights {weights}: keys do not match {spec.name}: {mismatch}; "
            f"pass a checkpoint of {spec.name} (timm names) or choose the matching --model"
        )
    # Mixed-precision checkpoints (FP16/BF16 tensors) load into the FP32 model as FP32.
    module.load_state_dict(state, strict=True)
    assert ckpt is not None
    return LoadedModel(module.eval(), "checkpoint", True, file_sha256(weights), str(weights),
                       class_names=ckpt.class_names, pretrained_cfg=ckpt.pretrained_cfg, source_format=source_format)


def key_mismatch(expected: dict[str, Any], state: dict[str, Any]) -> str:
    """How a checkpoint's keys differ from a model's state dict, in one line ("" when they match):
    counts and first examples of missing, unexpected and wrong-shape keys."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
    if wrong_shape:
        k = wrong_shape[0]
        parts.append(f"wrong shape {len(wrong_shape)} (e.g. {k}: file {tuple(state[k].shape)} "
                     f"vs model {tuple(expected[k].shape)})")
    return "; ".join(parts)
