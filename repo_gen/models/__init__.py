"""Model registry: which architectures repo-gen can build, and what each needs.

One file per model family (timm's layout); each registers `ModelSpec` rows with `register`.
Adding a variant is adding a row, not a code path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from repo_gen.errors import UserError

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class DataConfig:
    """How an image becomes the model's input tensor (timm's data config, resolved once)."""

    input_size: tuple[int, int, int] = (3, 256, 256)
    interpolation: str = "bicubic"
    crop_pct: float = 0.9
    crop_mode: str = "center"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def with_size(self, size: int) -> DataConfig:
        return DataConfig((3, size, size), self.interpolation, self.crop_pct, self.crop_mode, self.mean, self.std)

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @staticmethod
    def from_dict(d: dict) -> DataConfig:
        return DataConfig(
            tuple(d["input_size"]),  # type: ignore[arg-type]
            d["interpolation"],
            float(d["crop_pct"]),
            d.get("crop_mode", "center"),
            tuple(d["mean"]),  # type: ignore[arg-type]
            tuple(d["std"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class ModelSpec:
    """One buildable architecture.

    Attributes:
        name: repo-gen's name, also the prefix of every Triton model built from it.
        timm_name: the name `timm.create_model` takes.
        family: model family (the module that registered it).
        default_size: input height = width used when `--image-size` is not given.
        size_multiple: image sizes must be a multiple of this (see the family module for why).
        num_classes: classifier width.
        data: preprocessing (timm's data config for this model).
        params_m: parameter count in millions (documentation, and a sanity check in tests).
    """

    name: str
    timm_name: str
    family: str
    default_size: int = 256
    size_multiple: int = 32
    num_classes: int = 1000
    data: DataConfig = field(default_factory=DataConfig)
    params_m: float = 0.0
    notes: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if not _NAME_RE.match(spec.name):
        raise ValueError(f"bad model name in registry: {spec.name!r}")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    _load_families()
    if name not in _REGISTRY:
        raise UserError(
            f"--model {name!r}: unknown model; choose one of: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def _load_families() -> None:
    # Imported for their side effect of registering rows; one import per family module.
    from repo_gen.models import mobilevit  # noqa: F401
