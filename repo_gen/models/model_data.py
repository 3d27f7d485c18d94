"""What a build knows about its model before any stage runs: class count, class names, preprocessing.

Decided once, from the flags and the checkpoint, so that a bad `--labels` file, a head of one
output or a data-config flag out of range fails before the repository is touched, and every
stage (export check, calibration, evaluation, labels.txt, the preprocess model, the manifest)
reads the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repo_gen.errors import UserError
from repo_gen.labels import Labels, resolve_labels
from repo_gen.models import DataConfig, ModelSpec
from repo_gen.models.data_config import DataOverrides, resolve_data_config


@dataclass(frozen=True)
class ModelData:
    num_classes: int
    labels: Labels
    data: DataConfig

    def to_dict(self) -> dict:
        return {"num_classes": self.num_classes, "labels": self.labels.to_dict(), "data": self.data.to_dict()}


def resolve_model_data(spec: ModelSpec, weights: Path | None, overrides: DataOverrides, labels_file: Path | None = None,
                       eval_dir: Path | None = None, calib_dir: Path | None = None) -> ModelData:
    """Class count from the checkpoint's head (else the spec's), names by `resolve_labels`' precedence,
    data config by `resolve_data_config`'s (flags > checkpoint pretrained_cfg > timm's)."""
    num_classes, names, pretrained_cfg = spec.num_classes, None, None
    if weights is not None:
        from repo_gen.torch.loader import head_width, read_checkpoint, refuse_detector_state

        ckpt = read_checkpoint(weights)
        refuse_detector_state(ckpt.state, weights, spec.name)
        width = head_width(ckpt.state)
        if width is None:
            raise UserError(
                f"--weights {weights}: no classifier head (no 'head.fc.weight'); pass a checkpoint of a whole "
                f"{spec.name} classifier, not a backbone"
            )
        if width < 2:
            raise UserError(
                f"--weights {weights}: the classifier head has {width} output; a classifier needs at least 2 classes: "
                "pass a checkpoint of a multi-class classifier"
            )
        num_classes, names, pretrained_cfg = width, ckpt.class_names, ckpt.pretrained_cfg
    data = resolve_data_config(spec.data, pretrained_cfg, overrides)
    labels = resolve_labels(num_classes, labels_file, names, eval_dir, calib_dir)
    return ModelData(num_classes, labels, data)
