"""Class names for label files, from an installed package (no network)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from repo_gen.errors import UserError
from repo_gen.log import logger


def _timm_info_lines(name: str) -> list[str] | None:
    """Lines of timm's bundled dataset-info file `timm/data/_info/<name>`, read without importing
    timm (its import pulls in torchvision and torch._dynamo: about 9 s of a CLI run on 2 cores that
    only needs the class names); None when this timm does not keep the file there."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / name
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None


def _imagenet_info() -> tuple[list[str], dict[str, str]]:
    """(synsets in index order, synset -> WordNet lemmas), as timm's `ImageNetInfo()` reads them."""
    import csv

    synsets = _timm_info_lines("imagenet_synsets.txt")
    lemmas = _timm_info_lines("imagenet_synset_to_lemma.txt")
    if synsets is None or lemmas is None:  # another timm layout: ask timm itself
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        names = [info.index_to_label_name(i) for i in range(info.num_classes())]
        return names, {n: info.label_name_to_description(n) for n in names}
    return synsets, dict(csv.reader(lemmas, delimiter="\t"))


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order, from timm's bundled dataset info.

    The first synonym of each WordNet description ("tench, Tinca tinca" -> "tench"), which is
    what people expect to read back from a classifier.
    """
    synsets, lemmas = _imagenet_info()
    return [lemmas[s].split(",")[0].strip() for s in synsets]


def imagenet_synsets() -> list[str]:
    return _imagenet_info()[0]


def labels_for(num_classes: int) -> list[str]:
    """Default names for a head of `num_classes` outputs: ImageNet's for 1000, else class_<i> (no warning)."""
    return list(resolve_labels(num_classes, warn=False).names)


# --- Class names of a user's model ----------------------------------------------------------

LABELS_FLAG = "--labels"
_INDEX_RE = re.compile(r"^\d+$")
_SYNSET_RE = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class Labels:
    """The class names of a model, in logit order, and where they came from.

    `source` is one of "file", "checkpoint", "folders", "imagenet", "generic" (class_<i>).
    """

    names: tuple[str, ...]
    source: str
    detail: str = ""

    def to_dict(self) -> dict:
        return {"source": self.source, "detail": self.detail, "count": len(self.names)}


def read_labels_file(path: Path) -> list[str]:
    """Class names of a UTF-8 file, one per line (a trailing newline is fine).

    Raises:
        UserError: missing, not UTF-8, empty, a blank line, or a name given twice.
    """
    path = Path(path)
    fix = "write one class name per line, in the order of the model's outputs"
    if not path.is_file():
        raise UserError(f"{LABELS_FLAG} {path}: no such file; pass a UTF-8 text file with one class name per line")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{LABELS_FLAG} {path}: not UTF-8 text (byte {e.start}); save it as UTF-8 and {fix}") from e
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise UserError(f"{LABELS_FLAG} {path}: the file is empty; {fix}")
    names = [ln.strip() for ln in lines]
    blank = [i + 1 for i, n in enumerate(names) if not n]
    if blank:
        raise UserError(f"{LABELS_FLAG} {path}: line {blank[0]} is blank; every line must name a class ({fix})")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise UserError(
                f"{LABELS_FLAG} {path}: {n!r} appears on lines {seen[n] + 1} and {i + 1}; class names must be unique"
            )
        seen[n] = i
    return names


def folder_classes(directory: Path | None) -> list[str] | None:
    """ImageFolder class names of `directory`: its subfolders holding images, sorted as torchvision's
    ImageFolder sorts them (that order is the class index a model trained on the folder uses).
    None when the folder has no class subfolders (a flat folder of images)."""
    if directory is None or not Path(directory).is_dir():
        return None
    from repo_gen.data.images import list_images

    names = sorted(p.name for p in Path(directory).iterdir() if p.is_dir() and list_images(p))
    return names or None


def class_index(folders: list[str], labels: Labels, flag: str, directory: Path) -> dict[str, int]:
    """Map ImageFolder class folders to the model's class indices: THE helper for calibration and evaluation.

    A folder named like a class name takes that class; otherwise a number is the class index, and
    (for ImageNet names) a WordNet synset (n01443537) its ImageNet index.

    Raises:
        UserError: a folder that matches no class.
    """
    by_name = {n: i for i, n in enumerate(labels.names)}
    n_cls = len(labels.names)
    synsets = imagenet_synsets() if labels.source == "imagenet" else None
    index: dict[str, int] = {}
    bad = []
    for f in folders:
        if f in by_name:
            index[f] = by_name[f]
        elif _INDEX_RE.match(f) and int(f) < n_cls:
            index[f] = int(f)
        elif synsets is not None and _SYNSET_RE.match(f) and f in synsets:
            index[f] = synsets.index(f)
        else:
            bad.append(f)
    if bad:
        want = "a class name of the labels, a class index 0.." + str(n_cls - 1)
        if synsets is not None:
            want += " or an ImageNet synset (n01443537)"
        raise UserError(
            f"{flag} {directory}: class folders {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} match none of "
            f"the model's {n_cls} classes (labels from {labels.source}); name each folder by {want}, or pass "
            f"{LABELS_FLAG} FILE with the folder names"
        )
    return index


def resolve_labels(
    num_classes: int,
    labels_file: Path | None = None,
    checkpoint_names: list[str] | None = None,
    eval_dir: Path | None = None,
    calib_dir: Path | None = None,
    warn: bool = True,
) -> Labels:
    """The class names of a model whose head has `num_classes` outputs, by precedence:
    `--labels FILE`, names stored in the checkpoint, the ImageFolder class folders of `--eval-dir`
    (then `--calib-dir`) when there is one per output, ImageNet's names for a 1000-output head, else
    `class_<i>` with a warning.

    Every class folder of `eval_dir` / `calib_dir` must then match a class (`class_index`).

    Raises:
        UserError: a bad labels file, a count that differs from the head, folders that disagree.
    """
    folders = {flag: (d, folder_classes(d)) for flag, d in (("--eval-dir", eval_dir), ("--calib-dir", calib_dir))}
    labels: Labels | None = None
    if labels_file is not None:
        names = read_labels_file(labels_file)
        if len(names) != num_classes:
            raise UserError(
                f"{LABELS_FLAG} {labels_file}: {len(names)} names, but the model's classifier head has "
                f"{num_classes} outputs; give exactly {num_classes} lines, one per output in order"
            )
        labels = Labels(tuple(names), "file", str(labels_file))
    elif checkpoint_names is not None:
        if len(checkpoint_names) != num_classes or len(set(checkpoint_names)) != num_classes or not all(
            n.strip() and "\n" not in n and "\r" not in n for n in checkpoint_names
        ):
            raise UserError(
                f"--weights: the checkpoint stores {len(checkpoint_names)} class names (blank, multi-line or repeated ones "
                f"included) for a head of {num_classes} outputs; pass {LABELS_FLAG} FILE with {num_classes} unique names"
            )
        labels = Labels(tuple(n.strip() for n in checkpoint_names), "checkpoint")
    else:
        for flag, (d, names_) in folders.items():
            # Only a folder with one subfolder per output names the classes; a subset of the classes
            # (e.g. a few ImageNet synsets) is matched against the names found below instead.
            if names_ is not None and len(names_) == num_classes:
                labels = Labels(tuple(names_), "folders", f"{flag} {d}")
                break
    if labels is None and num_classes == 1000:
        labels = Labels(tuple(imagenet_labels()), "imagenet")
    if labels is None:
        if warn:
            logger.warning(
                f"no class names for the {num_classes} outputs: using class_0..class_{num_classes - 1}; pass "
                f"{LABELS_FLAG} FILE (one name per line) or store 'class_names' in the checkpoint"
            )
        labels = Labels(tuple(f"class_{i}" for i in range(num_classes)), "generic")
    for flag, (d, names_) in folders.items():
        if names_ is not None and d is not None:
            class_index(names_, labels, flag, Path(d))
    return labels
