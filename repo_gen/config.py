"""The build configuration: every option of `repo-gen build`, validated once, in one place.

`BuildConfig` is what flows through the stages. Validation happens in `__post_init__`
(Model Navigator's pattern) and raises `UserError` naming the flag and the fix, so no stage
ever sees a bad value. `None` means "default" and is resolved here, once.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from repo_gen.errors import UserError
from repo_gen.models import DataConfig, ModelSpec, get_model_spec
from repo_gen.models.data_config import DataOverrides, parse_triple
from repo_gen.models.model_data import ModelData, resolve_model_data

PRECISIONS = ("fp32", "fp16", "int8")
# Runtimes a model variant can be served by. "onnx": Triton's onnxruntime backend (NGC image);
# "py": Triton's python backend running ONNX Runtime (any tritonserver, the CPU one here);
# "trt": Triton's tensorrt backend with a TensorRT plan.
# "torch": Triton's python backend running the PyTorch model (compiled, on the GPU; eager on the CPU
# where no GPU exists), repo_gen/torch/runtime.py. Not in the default list: it needs a GPU to matter.
RUNTIMES = ("onnx", "py", "trt")
ALL_RUNTIMES = (*RUNTIMES, "torch")
# instance_group count when --instance-count is not given. Python-backend models get 2: each
# request batch makes a round trip between Triton and the model's stub process, and a second
# instance computes while the first waits (the cores are shared between them, see the template).
# mobilevit_xxs at concurrency 8 on 2 cores: 119 vs 97 infer/s (benchmarks/RESULTS.md, Foundation).
DEFAULT_INSTANCES = {"onnx": 1, "py": 2, "trt": 1, "torch": 1}
# The torch runtime on a GPU: two instances per GPU, so one instance's host work (Triton's request hand-over, the
# stub's Python, the output copy) overlaps the other's graph replay. H200, mobilevit_s FP16, CUDA shm, one lease
# (benchmarks/RESULTS.md run 16): client batch 64 at c2 / c16 14,024 / 15,513 img/s vs 12,745 / 14,662 with one.
TORCH_GPU_INSTANCES = 2
TRITON_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# A container image reference: [registry[:port]/]path[:tag][@digest], no spaces or shell characters.
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")


def triton_model_name(model: str, runtime: str, precision: str) -> str:
    """Naming scheme of every generated classifier: `<model>_<runtime>_<precision>`."""
    return f"{model}_{runtime}_{precision}"


def validate_model_name(name: str, what: str = "model name") -> str:
    """Reject names that could escape the repository (path traversal) or confuse Triton."""
    if not TRITON_NAME_RE.match(name) or ".." in name:
        raise UserError(
            f"{what} {name!r}: only letters, digits, '_', '.', '-' are allowed (no '/', no '..'); rename it"
        )
    return name


def parse_csv(value: str | list[str] | tuple[str, ...] | None, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    if value is None:
        return allowed
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [i.strip().lower() for i in items if i.strip()]
    bad = [i for i in items if i not in allowed]
    if bad or not items:
        raise UserError(f"{flag} {','.join(bad) or value!r}: unknown value; choose from {','.join(allowed)}")
    return tuple(dict.fromkeys(items))


def _check_image_dir(flag: str, path: Path) -> None:
    """Fail before any work (not after minutes of export) when a data folder holds no decodable image.

    Decodes files only until the first one succeeds, so a good folder costs one decode.
    """
    from repo_gen.data.images import list_images
    from repo_gen.data.preprocess import ImageError, decode_image

    files = list_images(path)
    if not files:
        raise UserError(
            f"{flag} {path}: no image files (.jpg/.jpeg/.png/.webp, searched recursively); "
            f"put images there or leave {flag} out to use the built-in photos"
        )
    first_error = ""
    for f in files:
        try:
            decode_image(f.read_bytes())
            return
        except (ImageError, OSError) as e:
            first_error = first_error or f"{f.name}: {e}"
    raise UserError(
        f"{flag} {path}: none of the {len(files)} image files could be decoded (e.g. {first_error}); "
        "pass readable JPEG/PNG/WebP images"
    )


@dataclass
class BuildConfig:
    """Everything `repo-gen build` needs.

    Attributes:
        model: registered model name (see `repo-gen build --help` for the list).
        output: model repository directory; created if missing.
        weights: checkpoint path; None with `pretrained=False` means random init (seed 0).
        pretrained: use timm's own pretrained loader (needs network or a populated HF cache).
        max_batch: max_batch_size of every config and the max of every TensorRT profile.
        opt_batch: TensorRT profile's opt batch; None resolves to min(16, max_batch).
        image_size: input H = W; None resolves to the model's default.
        precisions: which precision variants to build.
        runtimes: which serving variants to write.
        opset: ONNX opset (>= 17, for LayerNormalization).
        version: Triton model version directory to write.
        instance_count: instances per model in `instance_group`; None: DEFAULT_INSTANCES per runtime.
        max_queue_delay_us: dynamic batcher queue delay.
        gpus: GPU indices for the instance groups of GPU runtimes (torch); None: every visible GPU.
        torch_dtype: compute dtype of the torch runtime (fp32/fp16/bf16); None: the variant's precision.
        accuracy_tolerance: with a labelled --eval-dir, an FP16/INT8 variant whose top-1 falls more
            than this many points below FP32's is "inaccurate" (on top of the fidelity tolerances).
        labels: `--labels` file (UTF-8, one class name per line); None: the checkpoint's names, the
            class folders of eval_dir / calib_dir, ImageNet's for 1000 classes, else class_<i>.
        mean, std, interpolation, crop_pct: preprocessing overrides; None keeps the checkpoint's
            pretrained_cfg, else timm's (`repo_gen.models.data_config`).
        use_cache: reuse stage artifacts from the content-hash stage cache (`repo_gen.cache`);
            False (`--no-cache`) runs every stage and stores nothing.
        triton_image: the tritonserver image that serves the repository (named in each plan's
            rebuild command and recorded in the manifest's options); None: not named.
        task: registered task (`repo_gen.tasks`) that owns the output contract and fidelity metric.
    """

    model: str = "mobilevit_s"
    output: Path = Path("model_repository")
    weights: Path | None = None
    pretrained: bool = False
    max_batch: int = 64
    opt_batch: int | None = None
    image_size: int | None = None
    precisions: tuple[str, ...] = PRECISIONS
    runtimes: tuple[str, ...] = RUNTIMES
    opset: int = 17
    version: int = 1
    instance_count: int | None = None
    max_queue_delay_us: int = 100
    seed: int = 0
    export_tolerance: float = 1e-4
    io_dtype: str = "fp32"
    plugins: str = "off"
    pipeline: bool = True
    pipeline_model: str | None = None  # the ensemble's classifier (`<runtime>_<precision>`); None: CLASSIFIER_PREFERENCE
    allow_inaccurate: bool = False
    calib_dir: Path | None = None
    calib_count: int = 256
    calib_method: str = "max"
    eval_dir: Path | None = None
    eval_count: int = 64
    fp16_tolerance: float = 5e-3
    int8_tolerance: float = 0.99
    int8_top1_tolerance: float = 0.02  # at most this fraction of eval images may change top-1 class under INT8
    accuracy_tolerance: float = 1.0
    trt_plugin_lib: Path | None = None
    builder_opt_level: int = 3
    version_compatible: bool = False
    timing_cache: Path | None = None
    use_cache: bool = True
    triton_image: str | None = None
    task: str = "classification"
    gpus: tuple[int, ...] | str | None = None
    torch_dtype: str | None = None
    labels: Path | None = None
    mean: tuple[float, ...] | str | None = None
    std: tuple[float, ...] | str | None = None
    interpolation: str | None = None
    crop_pct: float | None = None

    spec: ModelSpec = field(init=False, repr=False)
    model_data: ModelData = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.spec = get_model_spec(self.model)
        self.output = Path(self.output)
        if self.weights is not None and self.pretrained:
            raise UserError("--weights and --pretrained: give one of them, not both")
        if self.weights is not None:
            self.weights = Path(self.weights)
            if not self.weights.is_file():
                raise UserError(f"--weights {self.weights}: no such file; pass the path of a .pth/.pt checkpoint")
        if not isinstance(self.max_batch, int) or self.max_batch < 1 or self.max_batch > 4096:
            raise UserError(f"--max-batch {self.max_batch}: must be an integer from 1 to 4096")
        if self.opt_batch is None:
            self.opt_batch = min(16, self.max_batch)
        if not 1 <= self.opt_batch <= self.max_batch:
            raise UserError(f"--opt-batch {self.opt_batch}: must be between 1 and --max-batch ({self.max_batch})")
        if self.image_size is None:
            self.image_size = self._checkpoint_image_size() or self.spec.default_size
        m = self.spec.size_multiple
        if self.image_size < m or self.image_size % m or self.image_size > 2048:
            raise UserError(
                f"--image-size {self.image_size}: {self.model} needs a multiple of {m} between {m} and 2048 "
                f"(e.g. {max(m, round(self.image_size / m) * m)})"
            )
        self.precisions = parse_csv(self.precisions, PRECISIONS, "--precisions")
        self.runtimes = parse_csv(RUNTIMES if self.runtimes is None else self.runtimes, ALL_RUNTIMES, "--runtimes")
        if self.pipeline_model is not None:
            self.pipeline_model = self._pipeline_variant(self.pipeline_model)
        if self.torch_dtype not in (None, "fp32", "fp16", "bf16"):
            raise UserError(f"--torch-dtype {self.torch_dtype}: choose fp32, fp16 or bf16")
        if self.gpus is not None:
            from repo_gen.torch.runtime import parse_gpus, resolve_gpus

            gpus = parse_gpus(self.gpus) if isinstance(self.gpus, str) else tuple(self.gpus)
            self.gpus = resolve_gpus(gpus)
        if self.opset < 17:
            raise UserError(f"--opset {self.opset}: must be >= 17 (LayerNormalization needs opset 17)")
        if self.version < 1:
            raise UserError(f"--version {self.version}: Triton model versions start at 1")
        if self.instance_count is not None and not 1 <= self.instance_count <= 64:
            raise UserError(f"--instance-count {self.instance_count}: must be from 1 to 64")
        if self.max_queue_delay_us < 0:
            raise UserError(f"--max-queue-delay-us {self.max_queue_delay_us}: must be >= 0")
        if self.io_dtype not in ("fp32", "fp16"):
            raise UserError(f"--io-dtype {self.io_dtype}: choose fp32 or fp16")
        if self.plugins not in ("off", "on", "auto"):
            raise UserError(f"--plugins {self.plugins}: choose off, on or auto")
        if self.calib_method not in ("max", "percentile", "entropy"):
            raise UserError(f"--calib-method {self.calib_method}: choose max, percentile or entropy")
        if not 0.0 <= self.int8_top1_tolerance <= 1.0:
            raise UserError(f"--int8-top1-tolerance {self.int8_top1_tolerance}: a fraction from 0 to 1 (0.02 = 2% of images)")
        if not 0 <= self.accuracy_tolerance <= 100:
            raise UserError(f"--accuracy-tolerance {self.accuracy_tolerance}: top-1 points, from 0 to 100")
        if self.calib_count < 1:
            raise UserError(f"--calib-count {self.calib_count}: must be >= 1")
        for flag, path in (("--calib-dir", self.calib_dir), ("--eval-dir", self.eval_dir)):
            if path is not None and not Path(path).is_dir():
                raise UserError(f"{flag} {path}: not a directory; pass a folder of images")
            if path is not None:
                _check_image_dir(flag, Path(path))
        if self.calib_dir is not None:
            self.calib_dir = Path(self.calib_dir)
        if self.eval_dir is not None:
            self.eval_dir = Path(self.eval_dir)
        if not 0 <= self.builder_opt_level <= 5:
            raise UserError(f"--builder-opt-level {self.builder_opt_level}: must be from 0 to 5")
        if self.output.exists() and not self.output.is_dir():
            raise UserError(f"--output {self.output}: is a file, not a directory; pass a directory path")
        self._check_tolerances()
        if self.eval_count < 1:
            raise UserError(f"--eval-count {self.eval_count}: must be >= 1")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"--seed {self.seed}: must be an integer >= 0")
        for name in ("pretrained", "pipeline", "allow_inaccurate", "version_compatible", "use_cache"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} {getattr(self, name)!r}: must be True or False")
        if self.timing_cache is not None:
            self.timing_cache = Path(self.timing_cache)
            if self.timing_cache.is_dir():
                raise UserError(f"--timing-cache {self.timing_cache}: is a directory; pass a file path")
        if self.trt_plugin_lib is not None:
            self.trt_plugin_lib = Path(self.trt_plugin_lib)
        if self.triton_image is not None and not IMAGE_RE.match(self.triton_image):
            raise UserError(f"--triton-image {self.triton_image!r}: not an image reference; pass e.g. "
                            "nvcr.io/nvidia/tritonserver:25.10-py3")
        from repo_gen.tasks import available_tasks

        if self.task not in available_tasks():
            raise UserError(f"task {self.task!r}: unknown; choose from {', '.join(available_tasks())}")
        mean, std = parse_triple(self.mean, "--mean"), parse_triple(self.std, "--std")
        self.mean, self.std = mean, std
        if self.labels is not None:
            self.labels = Path(self.labels)
        # Class names and preprocessing, decided once before any stage runs (repo_gen.models.model_data).
        self.model_data = resolve_model_data(
            self.spec, self.weights,
            DataOverrides(mean, std, self.interpolation, self.crop_pct, self.image_size),
            self.labels, self.eval_dir, self.calib_dir,
        )


    def _check_tolerances(self) -> None:
        import math

        def number(flag: str, v: object) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise UserError(f"{flag} {v!r}: must be a finite number")
            return float(v)

        if not 0 < number("--fp16-tolerance", self.fp16_tolerance) < 1:
            raise UserError(f"--fp16-tolerance {self.fp16_tolerance}: a relative L2 error, must be between 0 and 1 "
                            "(e.g. 5e-3)")
        if not 0 < number("--int8-tolerance", self.int8_tolerance) <= 1:
            raise UserError(f"--int8-tolerance {self.int8_tolerance}: a cosine similarity, must be in (0, 1] "
                            "(e.g. 0.99)")
        if not 0 < number("export_tolerance", self.export_tolerance) < 1:
            raise UserError(f"export_tolerance {self.export_tolerance}: a relative error, must be between 0 and 1")

    def _pipeline_variant(self, name: str) -> str:
        """`--pipeline-model` as `<runtime>_<precision>`; accepts the full model name too."""
        variants = [f"{r}_{p}" for r in self.runtimes for p in self.precisions]
        short = name.removeprefix(f"{self.model}_")
        if not self.pipeline:
            raise UserError(f"--pipeline-model {name}: no pipeline is written with --no-pipeline; drop one of the two")
        if short not in variants:
            raise UserError(f"--pipeline-model {name}: not a classifier this build writes; choose one of "
                            f"{', '.join(variants)} (or {self.model}_<that>)")
        return short

    def _checkpoint_image_size(self) -> int | None:
        """Input size of the checkpoint's pretrained_cfg (a fine-tuned model's training size), if stored."""
        if self.weights is None:
            return None
        from repo_gen.torch.loader import read_checkpoint

        size = (read_checkpoint(self.weights).pretrained_cfg or {}).get("input_size")
        return int(size[-1]) if isinstance(size, (list, tuple)) and size else None

    @property
    def data(self) -> DataConfig:
        return self.model_data.data

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("spec", None)
        d.pop("model_data", None)
        for k, v in list(d.items()):
            if isinstance(v, Path):
                d[k] = str(v)
            elif isinstance(v, tuple):
                d[k] = list(v)
        return d
