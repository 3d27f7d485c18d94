"""Class names for label files, from an installed package (no network)."""

from __future__ import annotations


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order, from timm's bundled dataset info.

    The first synonym of each WordNet description ("tench, Tinca tinca" -> "tench"), which is
    what people expect to read back from a classifier.
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]


def imagenet_synsets() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_label_name(i) for i in range(info.num_classes())]


def labels_for(num_classes: int, names: list[str] | None = None) -> list[str]:
    """ImageNet names for 1000 classes; `names` when given; else "class_<i>"."""
    if names is not None:
        return list(names)
    if num_classes == 1000:
        return imagenet_labels()
    return [f"class_{i}" for i in range(num_classes)]
