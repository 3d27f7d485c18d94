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
from repo_gen.models import ModelSpec, get_model_spec

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
TRITON_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


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
        use_cache: reuse stage artifacts from the content-hash stage cache (`repo_gen.cache`);
            False (`--no-cache`) runs every stage and stores nothing.
    """

    model: str = "mobilevit_s"
    output: Path = Path("model_repository")
    weights: Path | None = None
    pretrained: bool = False
    max_batch: int = 64
    opt_batch: int | None = None
    image_size: int | None = None
    precisions: tuple[str, ...] = ("fp32",)
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
    allow_inaccurate: bool = False
    calib_dir: Path | None = None
    calib_count: int = 256
    calib_method: str = "max"
    eval_dir: Path | None = None
    eval_count: int = 64
    fp16_tolerance: float = 5e-3
    int8_tolerance: float = 0.99
    trt_plugin_lib: Path | None = None
    builder_opt_level: int = 3
    version_compatible: bool = False
    timing_cache: Path | None = None
    use_cache: bool = True
    gpus: tuple[int, ...] | None = None
    torch_dtype: str | None = None
    extra: dict = field(default_factory=dict)

    spec: ModelSpec = field(init=False, repr=False)

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
            self.image_size = self.spec.default_size
        m = self.spec.size_multiple
        if self.image_size < m or self.image_size % m or self.image_size > 2048:
            raise UserError(
                f"--image-size {self.image_size}: {self.model} needs a multiple of {m} between {m} and 2048 "
                f"(e.g. {max(m, round(self.image_size / m) * m)})"
            )
        self.precisions = parse_csv(self.precisions, PRECISIONS, "--precisions")
        self.runtimes = parse_csv(RUNTIMES if self.runtimes is None else self.runtimes, ALL_RUNTIMES, "--runtimes")
        if self.torch_dtype not in (None, "fp32", "fp16", "bf16"):
            raise UserError(f"--torch-dtype {self.torch_dtype}: choose fp32, fp16 or bf16")
        if self.gpus is not None:
            from repo_gen.torch.runtime import resolve_gpus

            self.gpus = resolve_gpus(tuple(self.gpus))
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

    @property
    def data(self):
        assert self.image_size is not None
        return self.spec.data.with_size(self.image_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("spec", None)
        for k, v in list(d.items()):
            if isinstance(v, Path):
                d[k] = str(v)
            elif isinstance(v, tuple):
                d[k] = list(v)
        return d
