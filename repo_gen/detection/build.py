"""`repo-gen build` for detectors: checkpoint -> ONNX with NMS inside -> FP16/INT8 judged by mAP ->
Triton repository (python / onnxruntime / TensorRT plan models + the image-bytes pipeline).

Each stage takes plain inputs and returns a typed result; the repository is written through the
same `RepositoryTransaction` as the classifier's (nothing changes until the commit).
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from repo_gen import __version__
from repo_gen.config import DEFAULT_INSTANCES, PRECISIONS, parse_csv, triton_model_name
from repo_gen.detection.metrics import Detections
from repo_gen.detection.nms_graph import NmsOptions
from repo_gen.detection.specs import DetectorSpec, check_size, get_detector_spec
from repo_gen.errors import BuildFailure, UserError
from repo_gen.log import logger, step
from repo_gen.triton.repository import ModelEntry, RepositoryTransaction

DET_RUNTIMES = ("py", "onnx", "trt")
SEARCH_SCENES = 24


@dataclass
class DetectionBuildConfig:
    """Options of a detector build.

    Attributes:
        weights: detector checkpoint; None means random init (seed), an UNTRAINED model.
        labels: text file, one class name per line (background excluded); None: the fixture's digit
            names for 10 classes, else class_<i>.
        image_size: input H = W; None: the checkpoint's, else 320.
        eval_dir: folder of images + COCO annotations.json; None: the fixture's held-out scenes.
        map_tolerance: mAP@[.5:.95] points FP16/INT8 may lose against FP32.
    """

    model: str = "ssdlite_mobilevit_xxs"
    output: Path = Path("model_repository")
    weights: Path | None = None
    labels: Path | None = None
    image_size: int | None = None
    max_batch: int = 16
    precisions: tuple[str, ...] = ("fp32",)
    runtimes: tuple[str, ...] = DET_RUNTIMES
    nms: NmsOptions = field(default_factory=NmsOptions)
    map_tolerance: float = 1.0
    eval_dir: Path | None = None
    eval_count: int = 64
    calib_count: int = 64
    calib_method: str = "max"
    version: int = 1
    instance_count: int | None = None
    max_queue_delay_us: int = 100
    pipeline: bool = True
    allow_inaccurate: bool = False
    opset: int = 17
    seed: int = 0

    spec: DetectorSpec = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.spec = get_detector_spec(self.model)
        self.output = Path(self.output)
        if self.image_size is not None:
            check_size(self.image_size)
        if self.weights is not None and not Path(self.weights).is_file():
            raise UserError(f"--weights {self.weights}: no such file; pass the path of a detector checkpoint")
        if self.labels is not None and not Path(self.labels).is_file():
            raise UserError(f"--labels {self.labels}: no such file; pass a text file with one class name per line")
        if not 1 <= self.max_batch <= 1024:
            raise UserError(f"--max-batch {self.max_batch}: must be an integer from 1 to 1024")
        self.precisions = parse_csv(self.precisions, PRECISIONS, "--precisions")
        self.runtimes = parse_csv(self.runtimes, DET_RUNTIMES, "--runtimes")
        if self.map_tolerance < 0:
            raise UserError(f"--map-tolerance {self.map_tolerance}: must be >= 0 (mAP points)")
        if self.eval_dir is not None and not Path(self.eval_dir).is_dir():
            raise UserError(f"--eval-dir {self.eval_dir}: not a directory; pass a folder with annotations.json")
        if self.eval_count < 1 or self.calib_count < 1:
            raise UserError("--eval-count / --calib-count: must be >= 1")
        if self.opset < 17:
            raise UserError(f"--opset {self.opset}: must be >= 17")
        if self.version < 1:
            raise UserError(f"--version {self.version}: Triton model versions start at 1")
        if self.output.exists() and not self.output.is_dir():
            raise UserError(f"--output {self.output}: is a file, not a directory; pass a directory path")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("spec", None)
        d["nms"] = self.nms.to_dict()
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass
class DetectionBuildReport:
    model: str
    repository: str
    weights: dict = field(default_factory=dict)
    export_check: dict = field(default_factory=dict)
    fp32_map: dict = field(default_factory=dict)
    variants: list[dict] = field(default_factory=list)
    precision_md: str = ""
    timings_s: dict = field(default_factory=dict)
    entries: list[dict] = field(default_factory=list)


def pipeline_names(model: str) -> tuple[str, str, str]:
    return f"{model}_det_preprocess", f"{model}_det_postprocess", f"{model}_pipeline"


def planned_models(cfg: DetectionBuildConfig) -> list[str]:
    names = [triton_model_name(cfg.model, r, p) for p in cfg.precisions for r in cfg.runtimes]
    return names + (list(pipeline_names(cfg.model)) if cfg.pipeline else [])


def read_labels(path: Path | None, num_classes: int) -> list[str]:
    from repo_gen.detection.fixture import LABELS

    if path is None:
        return list(LABELS) if num_classes == len(LABELS) else [f"class_{i}" for i in range(num_classes)]
    names = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not names:
        raise UserError(f"--labels {path}: empty; write one class name per line")
    return names


@dataclass
class _Data:
    eval_x: np.ndarray
    eval_truth: list[Detections]  # input pixels
    eval_source: str
    calib_x: np.ndarray
    search_x: np.ndarray
    search_truth: list[Detections]


def _load_data(cfg: DetectionBuildConfig, size: int) -> _Data:
    from repo_gen.data.preprocess import ImageError, decode_image
    from repo_gen.detection.fixture import make_scenes, read_scenes
    from repo_gen.detection.letterbox import letterbox, to_input_boxes

    def boxed(img: Any, t: Detections) -> tuple[np.ndarray, Detections]:
        x, lb = letterbox(img, size)
        return x, Detections(to_input_boxes(t.boxes, lb), t.scores, t.classes)

    if cfg.eval_dir is not None:
        paths, truths = read_scenes(Path(cfg.eval_dir))
        pairs = []
        for p, t in list(zip(paths, truths, strict=True))[: cfg.eval_count]:
            try:
                pairs.append(boxed(decode_image(p.read_bytes()), t))
            except (ImageError, OSError) as e:
                raise UserError(f"--eval-dir: {p}: {e}; fix or remove the file (and its annotations)") from e
        source = str(cfg.eval_dir)
    else:
        pairs = [boxed(s.image, s.truth) for s in make_scenes("test", cfg.eval_count, cfg.seed)]
        source = "built-in fixture scenes (digits pasted onto scikit-image photos, held-out digits)"
    calib = [boxed(s.image, s.truth) for s in make_scenes("calib", max(cfg.calib_count, SEARCH_SCENES), cfg.seed)]
    return _Data(np.stack([x for x, _ in pairs]), [t for _, t in pairs], source,
                 np.stack([x for x, _ in calib[: cfg.calib_count]]),
                 np.stack([x for x, _ in calib[:SEARCH_SCENES]]), [t for _, t in calib[:SEARCH_SCENES]])


def build_detection(cfg: DetectionBuildConfig, lock_timeout_s: float = 0.0) -> DetectionBuildReport:
    from repo_gen.detection.export import check_export, export_core
    from repo_gen.detection.metrics import coco_map
    from repo_gen.detection.model import load_detector
    from repo_gen.detection.nms_graph import append_nms
    from repo_gen.detection.precision import DetPrecisionInputs, make_detection_variants, precision_table
    from repo_gen.fileio import file_sha256

    report = DetectionBuildReport(cfg.model, str(cfg.output.absolute()))
    t = report.timings_s
    t0 = time.perf_counter()
    with RepositoryTransaction(cfg.output, planned_models(cfg), lock_timeout_s=lock_timeout_s) as tx:
        assert tx.work is not None
        work = tx.work
        with step("load detector", t):
            n_labels = len(read_labels(cfg.labels, 1)) if cfg.labels is not None else None
            model = load_detector(cfg.spec, cfg.weights, n_labels, cfg.image_size, cfg.seed)
            info = model.repo_gen_info
            labels = read_labels(cfg.labels, info.num_classes)
            if cfg.weights is None:
                logger.warning(f"{cfg.model}: no --weights: RANDOM weights (seed {cfg.seed}); the detector is "
                               "UNTRAINED (train the fixture with scripts/train_detection_fixture.py)")
            report.weights = {"source": "checkpoint" if cfg.weights else "random",
                              "path": str(cfg.weights) if cfg.weights else None,
                              "sha256": file_sha256(Path(cfg.weights)) if cfg.weights else None,
                              "num_classes": info.num_classes, "image_size": info.image_size}
        size = info.image_size
        with step("detection data", t):
            data = _load_data(cfg, size)
        with step("export", t):
            core = export_core(model, cfg.opset)
            num_anchors = core.graph.output[0].type.tensor_type.shape.dim[1].dim_value
            core_path = work / "core_fp32.onnx"
            onnx.save(core, str(core_path))
            fp32_graph = append_nms(core, cfg.nms, info.num_classes, num_anchors)
            fp32_path = work / "detect_fp32.onnx"
            onnx.save(fp32_graph, str(fp32_path))
        with step("export check (ONNX Runtime vs PyTorch)", t):
            n_check = max(6, min(cfg.max_batch, 16))
            check = check_export(fp32_graph, model, data.eval_x[:n_check], cfg.nms, cfg.max_batch, threads=2)
            # A confident threshold can leave few detections to compare (none for an untrained model): the
            # same graph with a low score threshold exercises NMS, TopK and the padding on many boxes.
            low = NmsOptions(cfg.nms.max_detections, min(cfg.nms.score_threshold, 0.02), cfg.nms.iou_threshold)
            low_check = check_export(append_nms(core, low, info.num_classes, num_anchors), model,
                                     data.eval_x[:n_check], low, cfg.max_batch, threads=2)
            report.export_check = {**check.to_dict(), "low_threshold": {"score_threshold": low.score_threshold,
                                                                        **low_check.to_dict()}}
            if check.unmatched or not low_check.passed or low_check.matched == 0:
                check = check if check.unmatched else low_check
                raise BuildFailure(f"ONNX export of {cfg.model} does not match PyTorch: {check.unmatched} unmatched "
                                   f"detections (IoU >= 0.99 and scores within 1e-4 required), e.g. {check.examples[:1]}")
        inp = DetPrecisionInputs(core_path, cfg.nms, info.num_classes, num_anchors, data.calib_x, data.search_x,
                                 data.search_truth, data.eval_x, data.eval_truth, work / "precision",
                                 tolerance=cfg.map_tolerance, calib_method=cfg.calib_method)
        wanted = [p for p in cfg.precisions if p != "fp32"]
        with step("precision variants (mAP)", t):
            if wanted:
                fp32_map, variants = make_detection_variants(inp, wanted, t)
            else:
                from repo_gen.detection.export import run_detections
                from repo_gen.onnx.runner import make_session

                fp32_map = coco_map(data.eval_truth, run_detections(make_session(fp32_graph, threads=2), data.eval_x),
                                    info.num_classes)
                variants = []
        report.fp32_map = {**fp32_map.to_dict(), "eval_source": data.eval_source}
        report.variants = [v.to_dict() for v in variants]
        report.precision_md = precision_table(fp32_map, variants, cfg.map_tolerance)
        graphs: dict[str, tuple[Path, Path, str, str]] = {}
        if "fp32" in cfg.precisions:
            graphs["fp32"] = (fp32_path, fp32_path, "ready", "")
        for v in variants:
            reason = v.status_reason + (" (served anyway: --allow-inaccurate)"
                                        if v.status == "inaccurate" and cfg.allow_inaccurate else "")
            graphs[v.precision] = (v.serve_onnx, v.trt_onnx, v.status, reason)

        with step("triton models", t):
            _write_models(cfg, tx, graphs, labels, size, report)
        t["total"] = round(time.perf_counter() - t0, 3)
        record = {"model": cfg.model, "task": "detection", "repo_gen_version": __version__,
                  "python": platform.python_version(), "options": cfg.to_dict(), "nms": cfg.nms.to_dict(),
                  "weights": report.weights, "export_check": report.export_check, "fp32_map": report.fp32_map,
                  "variants": report.variants, "timings_s": t}
        tx.add_root_file(f"{cfg.model}_precision.md", f"# mAP of {cfg.model} per precision\n\n{report.precision_md}\n")
        with step("commit", t):
            tx.commit(record)
        report.entries = [e.__dict__ for e in tx.entries.values()]
    return report


def _write_models(cfg: DetectionBuildConfig, tx: RepositoryTransaction, graphs: dict[str, tuple[Path, Path, str, str]],
                  labels: list[str], size: int, report: DetectionBuildReport) -> None:
    from repo_gen.detection import triton as dt

    k = cfg.nms.max_detections
    det_data = {"task": "detection", "input_size": [3, size, size], "letterbox": True, "mean": [0.0] * 3,
                "std": [1.0] * 3, "nms": cfg.nms.to_dict(), "labels": len(labels)}
    for precision, (serve, trt, status, reason) in graphs.items():
        for runtime in cfg.runtimes:
            name = triton_model_name(cfg.model, runtime, precision)
            d = tx.model_dir(name)
            inst = cfg.instance_count or DEFAULT_INSTANCES[runtime]
            common: dict[str, Any] = dict(version=cfg.version, size=size, k=k, labels=labels, max_batch=cfg.max_batch,
                          instances=inst, delay_us=cfg.max_queue_delay_us)
            extra: dict[str, Any] = {}
            rstatus, rreason = status, reason
            if runtime == "py":
                files = dt.write_python_detector(d, name, serve, **common)
                backend = "python"
            elif runtime == "onnx":
                files = dt.write_onnxruntime_detector(d, name, serve, **common)
                backend = "onnxruntime"
            else:
                files, cmd = dt.write_tensorrt_detector(d, name, trt, **common)
                backend = "tensorrt"
                extra["trtexec"] = cmd
                if status == "ready":
                    rstatus = "not_built"
                    rreason = "no plan built here: TensorRT is absent; build it in the serving container (README.md)"
            tx.add(ModelEntry(name=name, base_model=cfg.model, runtime=runtime, backend=backend, precision=precision,
                              versions=tx.staged_versions(name, cfg.version), files=[f"{name}/{f}" for f in files],
                              status=rstatus, status_reason=rreason, max_batch_size=cfg.max_batch, data=det_data,
                              extra=extra))
    if not cfg.pipeline:
        return
    target = next((triton_model_name(cfg.model, r, p) for p in ("fp32", "fp16", "int8") for r in ("py", "onnx")
                   if r in cfg.runtimes and p in graphs and graphs[p][2] == "ready"), None)
    if target is None:
        raise UserError("--pipeline needs a ready py or onnx detector model; add --runtimes py or --precisions fp32")
    pre, post, ens = pipeline_names(cfg.model)
    inst = cfg.instance_count or DEFAULT_INSTANCES["py"]
    for name, files, backend in (
        (pre, dt.write_det_preprocess(tx.model_dir(pre), pre, cfg.version, size, cfg.max_batch, inst,
                                      cfg.max_queue_delay_us), "python"),
        (post, dt.write_det_postprocess(tx.model_dir(post), post, cfg.version, k, cfg.max_batch,
                                        cfg.max_queue_delay_us), "python"),
        (ens, dt.write_det_ensemble(tx.model_dir(ens), ens, pre, target, post, k, labels, cfg.max_batch), "ensemble"),
    ):
        tx.add(ModelEntry(name=name, base_model=cfg.model, runtime="pipeline", backend=backend, precision="-",
                          versions=tx.staged_versions(name, cfg.version), files=[f"{name}/{f}" for f in files],
                          max_batch_size=cfg.max_batch, data=det_data,
                          extra={"detector": target, "steps": [pre, target, post]} if name == ens else {}))
