"""Typed results that the build stages return, the stage cache stores and the manifest records.

    load + export + check    -> ExportResult(onnx, inputs, outputs, check: ExportCheck, weights: WeightsInfo)
    precision stage          -> PrecisionVariant (repo_gen.precision) with Fidelity records
    runtime writers          -> WrittenModel (repo_gen.runtimes) -> ModelEntry (repo_gen.manifest)

Each type converts to the plain JSON the manifest and the cache hold (`to_dict`) and back
(`from_dict`), so a reader gets the same types the build made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repo_gen.triton.config import TensorSpec

if TYPE_CHECKING:
    from repo_gen.config import BuildConfig
    from repo_gen.precision import PrecisionVariant


def tensor_specs(items: list[dict[str, Any]] | None) -> list[TensorSpec]:
    """TensorSpec values back from their manifest/cache dicts."""
    return [TensorSpec(**d) for d in items or []]


@dataclass(frozen=True)
class Tolerance:
    """The bound a variant must meet to be "ready".

    Attributes:
        metric: what is bounded, in words (e.g. "rel_l2 <= tolerance and top-1 agreement 100%").
        value: the bound itself (`BuildConfig.fp16_tolerance` / `int8_tolerance`).
    """

    metric: str
    value: float


@dataclass
class Fidelity:
    """How one graph compares with the FP32 reference on the evaluation set.

    Attributes:
        metrics: the task's fidelity metrics (classification: `repo_gen.compare.fidelity`, plus
            max_rel and, with labelled evaluation images, accuracy).
        tolerance: the bound the metrics were judged against; None for a reference.
        graph: which graph was measured, in words (e.g. "int8_trt.onnx (TensorRT form)").
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    tolerance: Tolerance | None = None
    graph: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Fidelity | None:
        if not d:
            return None
        tol = d.get("tolerance")
        return cls(dict(d.get("metrics") or {}), Tolerance(**tol) if tol else None, str(d.get("graph", "")))


@dataclass
class ExportCheck:
    """ONNX Runtime vs PyTorch right after export and after the graph cleanup.

    Attributes:
        raw / cleaned: max relative error per batch size (keys are batch sizes as strings, as in JSON).
        tolerance: `BuildConfig.export_tolerance` the build applied.
    """

    raw: dict[str, float]
    cleaned: dict[str, float]
    nodes_raw: int
    nodes_cleaned: int
    tolerance: float
    metric: str = "max|onnx - torch| / max|torch| per batch (inputs uniform [0,1))"

    @property
    def worst(self) -> float:
        return max([*self.raw.values(), *self.cleaned.values()])


@dataclass
class WeightsInfo:
    """Where the weights came from (the manifest's `weights` record)."""

    source: str
    trained: bool
    checkpoint_sha256: str | None
    path: str | None
    num_classes: int


@dataclass
class ExportResult:
    """The checked FP32 ONNX graph: what every precision variant starts from.

    Attributes:
        onnx: the cleaned FP32 graph on disk.
        inputs / outputs: its tensors as Triton declares them (batch dimension left out).
        notes: lines for the build report (e.g. that the weights are random).
    """

    onnx: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    check: ExportCheck
    weights: WeightsInfo
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return self.weights.num_classes

    def to_dict(self) -> dict[str, Any]:
        """JSON form without the file path (the cache stores the file itself)."""
        d = asdict(self)
        d.pop("onnx")
        return d

    @classmethod
    def from_dict(cls, onnx: Path, d: dict[str, Any]) -> ExportResult:
        return cls(onnx, tensor_specs(d["inputs"]), tensor_specs(d["outputs"]), ExportCheck(**d["check"]),
                   WeightsInfo(**d["weights"]), list(d.get("notes", [])))


@dataclass
class WriteRequest:
    """What a runtime writer (`repo_gen.runtimes.RUNTIME_WRITERS`) needs to write one model.

    Attributes:
        model_dir: the staged model directory to fill (empty, or holding carried-over versions).
        inputs / outputs: the tensors the model declares (from the task's output contract).
        work: scratch directory of the build (e.g. for the TensorRT plugin graph).
        plugin_library: `repo_gen.trt.plugin_graph.plugin_library(cfg)` when the build uses
            plugins, resolved once per build; None otherwise.
    """

    cfg: BuildConfig
    name: str
    model_dir: Path
    variant: PrecisionVariant
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str]
    work: Path | None = None
    plugin_library: tuple[Path | None, dict[str, Any]] | None = None

    @classmethod
    def make(cls, cfg: BuildConfig, name: str, model_dir: Path, variant: PrecisionVariant, labels: list[str],
             **kw: Any) -> WriteRequest:
        """A request whose tensors come from `cfg.task`'s output contract for `len(labels)` classes."""
        from repo_gen.tasks import get_task

        assert cfg.image_size is not None
        inputs, outputs = get_task(cfg.task).io(cfg.image_size, len(labels), variant.io_dtype)
        return cls(cfg, name, model_dir, variant, inputs, outputs, labels, **kw)


@dataclass
class WrittenModel:
    """What a runtime writer wrote.

    Attributes:
        files: paths relative to the model directory.
        status: "ready", or "not_built" (e.g. a plan that needs TensorRT here).
        max_batch_size: the config's max_batch_size (a plan's is its profile's max).
        details: runtime-specific manifest facts (a plan's profile, engine, plugin libraries ...).
        fidelity: set by a writer that judged the model it wrote itself (the torch runtime runs its
            own PyTorch model, not the variant's ONNX graph); None: the variant's graph's fidelity applies.
    """

    files: list[str]
    status: str
    status_reason: str
    max_batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    details: dict[str, Any] = field(default_factory=dict)
    fidelity: Fidelity | None = None
