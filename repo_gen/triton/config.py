"""What a Triton model config says, as data. Templates in `templates/` turn it into text.

One dataclass for every backend; the per-backend differences live in the templates
(`templates/<backend>.pbtxt.j2`), not in isinstance ladders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TensorSpec:
    name: str
    data_type: str  # Triton enum name: TYPE_FP32, TYPE_FP16, TYPE_STRING, ...
    dims: list[int]  # without the batch dimension when max_batch_size > 0
    label_filename: str | None = None
    optional: bool = False
    # ModelInput.format: image inputs say their layout (FORMAT_NCHW / FORMAT_NHWC), which Triton's
    # own image clients require (image_client.py refuses FORMAT_NONE); None writes nothing.
    format: str | None = None


@dataclass
class WarmupSpec:
    name: str
    batch_size: int
    inputs: list[TensorSpec]
    kind: str = "random_data"  # random_data | zero_data


@dataclass
class EnsembleStep:
    model_name: str
    model_version: int
    input_map: dict[str, str]  # model's input name -> ensemble tensor
    output_map: dict[str, str]  # model's output name -> ensemble tensor


@dataclass
class ModelConfigSpec:
    """Fields of one config.pbtxt.

    Attributes:
        template: which template renders it (`onnxruntime`, `python`, `tensorrt_plan`, `ensemble`);
            the template alone writes the config's `backend` or `platform`.
        max_queue_delay_us: None means dynamic batching is off.
        preferred_batch_sizes: empty means "let the batcher form the largest batch it can".
        instance_kind: KIND_CPU, KIND_GPU or KIND_AUTO.
        num_versions: version_policy latest { num_versions }.
        cuda_graphs: tensorrt_plan only, (captured batch size, lowest batch it serves) per CUDA
            graph (`trt.profile.graph_ranges`); empty means no CUDA graphs.
    """

    name: str
    template: str
    max_batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_queue_delay_us: int | None = 100
    preferred_batch_sizes: list[int] = field(default_factory=list)
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    num_versions: int = 1
    warmup: list[WarmupSpec] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    cuda_graphs: list[tuple[int, int]] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)  # KIND_GPU only: instance_group gpus; empty = all
    ensemble_steps: list[EnsembleStep] = field(default_factory=list)
    default_model_filename: str | None = None

    def to_context(self) -> dict:
        return asdict(self)
