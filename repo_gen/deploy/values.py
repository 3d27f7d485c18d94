"""Everything the cluster manifests say, decided once from the repository and its manifest.

Only the repository's own files are read (`repo-gen.json`, each model's `config.pbtxt` and its
files' sizes): never build internals. The templates in `render.py` read these values and nothing
else, the way the `values.yaml` of Triton's Helm chart is the whole surface of its templates.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from repo_gen.errors import UserError
from repo_gen.manifest import MANIFEST_NAME, Manifest, load_manifest
from repo_gen.triton.argv import ServerOptions, tritonserver_argv

TARGETS = ("kubernetes", "kserve")
# The image the project names everywhere else (README, build --help); --triton-image or the
# manifest's `triton_image` replace it.
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
KUBERNETES_VERSION = "1.32.0"  # the schemas the tests validate against (kubernetes-validate)
MOUNT = "/models"  # the pod's writable copy of the repository (emptyDir) that tritonserver serves
KSERVE_MOUNT = "/mnt/models"  # where KServe's storage initializer puts storageUri
PLUGIN_DIR = "/opt/repo-gen/plugins"  # where an image derived from the NGC one carries our plugin libraries
# The NGC tritonserver image's non-root user (`triton-server`).
RUN_AS_USER = 1000
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
KSERVE_PORTS = {"http": 8080, "grpc": 9000, "metrics": 8002}  # KServe's Triton runtime convention

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Object-store URLs go into argv lists and YAML, never a shell; still only plain path characters.
URL_RE = re.compile(r"^(s3|gs)://([a-z0-9][a-z0-9._-]{1,61}[a-z0-9])(/[A-Za-z0-9._/-]*)?$")
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


@dataclass(frozen=True)
class RepositorySource:
    """Where the pod gets the repository: a PersistentVolumeClaim or an object store.

    Attributes:
        scheme: "pvc", "s3" or "gs".
        location: the claim name (pvc) or the full URL (s3/gs).
    """

    scheme: str
    location: str

    @property
    def storage_uri(self) -> str:
        """The form KServe's storage initializer reads."""
        return f"pvc://{self.location}/" if self.scheme == "pvc" else self.location


@dataclass(frozen=True)
class PlanModel:
    """A TensorRT model whose plan the init step builds on the node (or takes from the plan cache)."""

    name: str
    plan: str  # relative to the model directory, e.g. "1/model.plan"
    script: str  # rebuild_engine.sh, relative to the model directory


@dataclass(frozen=True)
class Sizing:
    """Pod resources and probe budget derived from the repository, with the arithmetic shown."""

    cpu_request: str
    memory_request: str
    memory_limit: str
    startup_budget_s: int
    explanation: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DeployValues:
    name: str
    target: str
    image: str
    image_source: str  # "--triton-image", "manifest", or "default"
    replicas: int
    max_replicas: int
    gpus_per_pod: int
    source: RepositorySource
    models: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...]  # (model, why) not loaded by the deployment
    plan_models: tuple[PlanModel, ...]
    server_argv: tuple[str, ...]
    ports: dict[str, int]
    deployed_configs: dict[str, str]  # model -> config.pbtxt text of the deployed copy (gpus-per-pod > 1)
    sizing: Sizing
    queue_target_us: int
    plan_cache: str  # "pvc" or "emptydir"
    plugin_libs: tuple[str, ...]  # paths inside the image
    python_models: tuple[str, ...]  # python-backend models: need onnxruntime + Pillow in the image


def parse_repository_url(url: str | None, name: str) -> RepositorySource:
    """`--repository-url` into a source; None means a claim named `<name>-model-repository`."""
    if url is None:
        return RepositorySource("pvc", f"{name}-model-repository")
    if url.startswith("pvc:"):
        claim = url[4:]
        if not DNS_LABEL_RE.match(claim):
            raise UserError(f"--repository-url {url}: pvc:NAME needs a PersistentVolumeClaim name (lowercase letters, "
                            "digits, '-'), e.g. pvc:model-repository")
        return RepositorySource("pvc", claim)
    m = URL_RE.match(url)
    if not m:
        raise UserError(f"--repository-url {url}: unknown scheme or form; use s3://BUCKET/PATH, gs://BUCKET/PATH "
                        "or pvc:CLAIM (path characters: letters, digits, . _ / -)")
    return RepositorySource(m.group(1), url.rstrip("/"))


def _k8s_name(manifest: Manifest, name: str | None) -> str:
    if name is None:
        bases = sorted({e.base_model for e in manifest.models.values()} - {""})
        name = (bases[0] if len(bases) == 1 else "repo-gen") + "-triton"
        name = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    if not DNS_LABEL_RE.match(name):
        raise UserError(f"--name {name}: Kubernetes names are lowercase letters, digits and '-' (at most 63); pick another")
    return name


def recorded_image(manifest: Manifest) -> str | None:
    """The tritonserver image the build recorded (`--triton-image`, kept in the build's options)."""
    for record in manifest.builds.values():
        for where in (record, record.get("options") or {}, (record.get("options") or {}).get("extra") or {}):
            if isinstance(where, dict) and isinstance(where.get("triton_image"), str) and where["triton_image"]:
                return str(where["triton_image"])
    return None


def _select_models(repo: Path, manifest: Manifest, target: str) -> tuple[list[str], list[tuple[str, str]], list[PlanModel]]:
    """Which models the pod loads. Plan models not built yet are built by the init step (kubernetes);
    KServe mounts storage read-only, so there they load only when their plan is already there."""
    chosen: list[str] = []
    left: list[tuple[str, str]] = []
    plans: list[PlanModel] = []
    entries = manifest.models
    for name in sorted(entries):
        e = entries[name]
        status, backend, extra = e.status, e.backend, e.extra
        if status == "inaccurate":
            left.append((name, f"missed its fidelity tolerance ({e.status_reason})"))
            continue
        if backend == "tensorrt":
            script = str(extra.get("rebuild_script") or "rebuild_engine.sh")
            plan = str(extra.get("plan") or f"{(e.versions or [1])[-1]}/model.plan")
            if target == "kubernetes" and (repo / name / script).is_file():
                plans.append(PlanModel(name, plan, script))
            elif status != "ready" and not (repo / name / plan).is_file():
                left.append((name, f"no plan in the repository and KServe's storage is read-only; run {name}/{script} "
                                   "inside the serving image and upload the repository again"))
                continue
        elif status != "ready":
            left.append((name, f"status {status}: {e.status_reason}"))
            continue
        chosen.append(name)
    served = set(chosen)
    for name in list(chosen):
        steps = entries[name].extra.get("steps") or []
        missing = [s for s in steps if s not in served]
        if entries[name].backend == "ensemble" and missing:
            chosen.remove(name)
            left.append((name, f"needs {', '.join(missing)}, which is not loaded"))
    return chosen, left, plans


def _instance_groups(config_text: str, what: str):
    from repo_gen.triton.render import parse_config

    return parse_config(config_text, what)


def per_gpu_config(config_text: str, model: str, gpus: int) -> str | None:
    """The deployed copy of a config with one instance group per GPU (Triton's `gpus: [i]`);
    None when the model runs on the CPU (nothing to spread). The built repository is not touched."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    cfg = _instance_groups(config_text, f"{model}/config.pbtxt")
    gpu_kinds = (model_config_pb2.ModelInstanceGroup.KIND_GPU, model_config_pb2.ModelInstanceGroup.KIND_AUTO)
    groups = list(cfg.instance_group) or [model_config_pb2.ModelInstanceGroup(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_AUTO)]
    if cfg.platform == "ensemble" or cfg.backend == "python" or not all(g.kind in gpu_kinds for g in groups):
        return None
    count = max(1, sum(g.count or 1 for g in groups))
    del cfg.instance_group[:]
    for gpu in range(gpus):
        cfg.instance_group.add(name=f"{cfg.name}_gpu{gpu}", count=count,
                               kind=model_config_pb2.ModelInstanceGroup.KIND_GPU, gpus=[gpu])
    header = (f"# Deployed copy written by repo-gen deploy: instance groups per GPU ({gpus} GPUs per pod).\n"
              f"# The repository's own {model}/config.pbtxt is unchanged.\n")
    return header + text_format.MessageToString(cfg)


def _on_gpu(cfg) -> list[bool]:
    """Per instance group of a parsed config: does it run on GPUs (KIND_GPU)?"""
    from tritonclient.grpc import model_config_pb2

    return [g.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU for g in cfg.instance_group]


def _mib(n_bytes: float) -> int:
    return int(math.ceil(n_bytes / 2**20))


# Host memory of one python-backend stub running the torch runtime on a GPU, before its files: measured
# 1.2 GiB resident per stub (torch, the CUDA context, inductor's loaded code; mobilevit_xxs, 2 instances,
# H200, RESULTS.md run 18), rounded up.
TORCH_GPU_STUB_MIB = 1280
TORCH_FILES = (".pt", ".bin")  # weights and AOT-precompiled buckets, read by every instance


def size_pod(repo: Path, manifest: Manifest, models: list[str], gpus: int = 1) -> Sizing:
    """CPU / memory requests and the startup budget from what the pod loads.

    Instances: a GPU instance group without a `gpus` list runs its count on every GPU of the pod.
    Memory: 1 GiB for tritonserver, per instance 3x its weights (ORT / TensorRT workspaces and
    arenas) and 300 MiB per python-backend stub process (numpy + onnxruntime); a torch-runtime stub on a
    GPU takes TORCH_GPU_STUB_MIB plus twice its files instead. CPU: one core for the server plus one per
    python-backend instance (each runs its own process).
    Startup: 60 s, plus 5 s per instance (10 s more for a torch one: module, precompiled buckets, CUDA
    graphs) and 1 s per 20 MiB of files it loads, plus 2 s per warmup batch, doubled as margin; plan
    builds happen in the init step, before any probe runs.
    """
    from repo_gen.triton.render import parse_config

    mem = 1024.0
    cpu = 1
    startup = 60.0
    lines = ["memory: 1024 MiB for tritonserver"]
    for name in models:
        e = manifest.models[name]
        cfg_path = repo / name / "config.pbtxt"
        cfg = parse_config(cfg_path.read_text(), str(cfg_path))
        on_gpu = _on_gpu(cfg)
        instances = sum((g.count or 1) * ((len(g.gpus) or max(1, gpus)) if gpu else 1)
                        for g, gpu in zip(cfg.instance_group, on_gpu, strict=True)) or 1
        torch_gpu = e.runtime == "torch" and any(on_gpu)
        suffixes = TORCH_FILES if torch_gpu else (".onnx", ".plan")
        weights = sum((repo / f).stat().st_size for f in e.files if (repo / f).is_file() and f.endswith(suffixes))
        if torch_gpu:
            add = instances * (TORCH_GPU_STUB_MIB + 2 * weights / 2**20)
            startup += 10 * instances
        else:
            add = instances * 3 * weights / 2**20 + (300 * instances if e.backend == "python" else 0)
        if e.backend == "python":
            cpu += instances
        mem += add
        startup += 5 * instances + instances * weights / (20 * 2**20) + 2 * len(cfg.model_warmup)
        what = "torch files" if torch_gpu else "weights"
        lines.append(f"{name}: {instances} instance(s), {weights / 2**20:.1f} MiB {what} -> +{add:.0f} MiB")
    mem_mib = int(math.ceil(mem / 256) * 256)
    budget = int(math.ceil(2 * startup / 10) * 10)
    lines.append(f"total: {mem_mib} MiB requested (limit 2x), {max(cpu, 2)} CPU, startup budget {budget} s")
    return Sizing(str(max(cpu, 2)), f"{mem_mib}Mi", f"{2 * mem_mib}Mi", budget, lines)


def make_values(repo: Path, *, target: str = "kubernetes", replicas: int = 1, max_replicas: int | None = None,
                gpus_per_pod: int = 1, triton_image: str | None = None, repository_url: str | None = None,
                name: str | None = None, queue_target_us: int = 10000, plan_cache: str = "pvc") -> DeployValues:
    """Validate the inputs and decide every value of the manifests.

    Args:
        max_replicas: HPA ceiling; None means 4x `replicas`.
        triton_image: None means the manifest's `triton_image`, else DEFAULT_TRITON_IMAGE.
        repository_url: None means the claim `<name>-model-repository`.
        name: None means `<base model>-triton`.
    """
    if target not in TARGETS:
        raise UserError(f"--target {target}: unknown target; use one of {', '.join(TARGETS)}")
    if replicas < 1:
        raise UserError(f"--replicas {replicas}: need at least 1 replica")
    if max_replicas is not None and max_replicas < replicas:
        raise UserError(f"--max-replicas {max_replicas}: must be at least --replicas {replicas}")
    if gpus_per_pod < 0:
        raise UserError(f"--gpus-per-pod {gpus_per_pod}: cannot be negative; use 0 for CPU-only pods or a GPU count")
    if queue_target_us < 1:
        raise UserError(f"--queue-target-us {queue_target_us}: must be at least 1")
    if plan_cache not in ("pvc", "emptydir"):
        raise UserError(f"--plan-cache {plan_cache}: use pvc or emptydir")
    if triton_image is not None and not IMAGE_RE.match(triton_image):
        raise UserError(f"--triton-image {triton_image}: not an image reference (e.g. {DEFAULT_TRITON_IMAGE})")
    if not repo.is_dir():
        raise UserError(f"--model-repository {repo}: no such directory; run `repo-gen build --output {repo}` first")
    if not (repo / MANIFEST_NAME).is_file():
        raise UserError(f"--model-repository {repo}: no {MANIFEST_NAME} manifest, so not a repository repo-gen built; "
                        f"run `repo-gen build --output {repo}`")
    manifest = load_manifest(repo)
    if not manifest.models:
        raise UserError(f"--model-repository {repo}: its manifest lists no models; run `repo-gen build --output {repo}`")
    k8s_name = _k8s_name(manifest, name)
    source = parse_repository_url(repository_url, k8s_name)
    if target == "kserve" and gpus_per_pod > 1:
        raise UserError(f"--gpus-per-pod {gpus_per_pod} with --target kserve: KServe mounts the repository read-only, so "
                        "per-GPU instance groups cannot be deployed there; use --target kubernetes")
    models, left, plans = _select_models(repo, manifest, target)
    if not models:
        raise UserError(f"--model-repository {repo}: no model can be deployed ({'; '.join(f'{m}: {w}' for m, w in left)})")
    if plans and gpus_per_pod == 0:
        raise UserError(f"--gpus-per-pod 0: {', '.join(p.name for p in plans)} are TensorRT models and need a GPU; "
                        "pass --gpus-per-pod 1 or build with --runtimes onnx,py")
    torch_gpu = [m for m in models if manifest.models[m].runtime == "torch"
                 and any(_on_gpu(_instance_groups((repo / m / "config.pbtxt").read_text(), f"{m}/config.pbtxt")))]
    if torch_gpu and gpus_per_pod == 0:
        raise UserError(f"--gpus-per-pod 0: torch-runtime model(s) {', '.join(torch_gpu)} were compiled for a GPU and "
                        "need one; pass --gpus-per-pod 1, or deploy a repository built without --runtimes torch")

    from repo_gen.trt.serve import tensorrt_server_args

    # Plugin libraries were recorded with build-machine paths; in the cluster they sit in the image.
    loaded = {n: e for n, e in manifest.models.items() if n in models}
    plugin_libs: list[str] = []
    for e in loaded.values():
        extra = e.extra
        libs = [f"{PLUGIN_DIR}/{Path(lib).name}" for lib in extra.get("plugin_libs", [])]
        plugin_libs += [lib for lib in libs if lib not in plugin_libs]
        if libs:
            loaded[e.name] = dataclasses.replace(e, extra=dict(extra, plugin_libs=libs))
    plan_args = tensorrt_server_args(Manifest(models=loaded))

    ports = dict(KSERVE_PORTS if target == "kserve" else PORTS)
    opts = ServerOptions(repository=KSERVE_MOUNT if target == "kserve" else MOUNT, host="0.0.0.0",  # noqa: S104 - a pod serves its Service
                         http_port=ports["http"], grpc_port=ports["grpc"], metrics_port=ports["metrics"],
                         models=tuple(models))
    argv = tritonserver_argv("tritonserver", opts, plan_args)

    deployed: dict[str, str] = {}
    if gpus_per_pod > 1:
        for m in models:
            text = per_gpu_config((repo / m / "config.pbtxt").read_text(), m, gpus_per_pod)
            if text is not None:
                deployed[m] = text

    recorded = recorded_image(manifest)
    if triton_image is not None:
        image, image_source = triton_image, "--triton-image"
    elif recorded is not None:
        image, image_source = recorded, "manifest"
    else:
        image, image_source = DEFAULT_TRITON_IMAGE, "default"

    python_models = tuple(m for m in models if manifest.models[m].backend == "python")
    return DeployValues(
        name=k8s_name, target=target, image=image, image_source=image_source, replicas=replicas,
        max_replicas=max_replicas if max_replicas is not None else 4 * replicas, gpus_per_pod=gpus_per_pod,
        source=source, models=tuple(models), left_out=tuple(left), plan_models=tuple(plans),
        server_argv=tuple(argv), ports=ports, deployed_configs=deployed,
        sizing=size_pod(repo, manifest, models, gpus_per_pod), queue_target_us=queue_target_us, plan_cache=plan_cache,
        plugin_libs=tuple(plugin_libs), python_models=python_models,
    )
