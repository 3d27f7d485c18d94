"""Write `<model>_pipeline`: encoded image bytes in, class scores out, all inside Triton.

    <model>_pipeline (platform "ensemble", max_batch_size = the classifier's)
      IMAGE   TYPE_STRING [1]  one encoded image per batch element (JPEG/PNG/WebP/BMP/...)
        -> <model>_preprocess  python backend; decode, convert mode, resize + crop + normalize
                               exactly as timm's eval transform for this model's data config;
                               dynamic batching; per-request errors
        -> classifier          the variant chosen below, unchanged
      logits  [num_classes]    with label_filename: ask for top-k names with class_count = k

Choices, and why:

* Top-k through Triton's classification extension (label_filename on the ensemble output),
  not a postprocess model. The client picks k per request (class_count), Triton's core does
  the top-k on the logits it already holds, and no third python-backend hop (an IPC round
  trip and a process competing for the same CPU cores) is added. Clients that want the raw
  logits (to compare, or to compute a softmax) ask for the output without class_count. The
  scores are therefore logits, not probabilities: a softmax needs all of them.
* One ensemble per model, pointing at one classifier chosen at build time by
  `CLASSIFIER_PREFERENCE` among the staged variants whose status is "ready": a TensorRT
  plan first (built only where TensorRT exists: the GPU box or the NGC image), then the
  python-backend ONNX Runtime variant ("py", loads on every tritonserver, including the
  CPU-only one from the nvidia-pytriton wheel), then the onnxruntime-backend variant
  ("onnx", needs the onnxruntime backend of the NGC image). "py" comes before "onnx" because
  an ensemble is only useful where its target loads; on an NGC GPU server without a plan,
  build with `--runtimes onnx` (no "py") to make the ensemble use the GPU through the
  onnxruntime backend. Triton cannot pick a step's model at run time, so one ensemble per
  target would mean one name per target for clients to choose from; a single stable name
  (`<model>_pipeline`) is what clients hard-code.
* The preprocessing model's output dtype, dims and the classifier's I/O names come from the
  chosen classifier's entry (the tensors its writer declared), so an FP16-I/O variant gets FP16 pixels.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from repo_gen.errors import BuildFailure, UserError
from repo_gen.manifest import ModelEntry
from repo_gen.tasks import LABELS_FILE
from repo_gen.triton.config import EnsembleStep, ModelConfigSpec, TensorSpec
from repo_gen.triton.models import write_config_and_labels
from repo_gen.triton.render import render_config, render_template

IMAGE_INPUT = "IMAGE"
PREPROCESS_FILE = Path(__file__).resolve().parents[1] / "data" / "preprocess.py"

# (runtime, precision), best first. TensorRT: FP16 before INT8 (FP16 keeps accuracy; INT8
# only pays off on some layers of these small models) before FP32. ONNX Runtime on a CPU:
# FP32 first (emulated FP16 and symmetric INT8 are slower than FP32 there, see GUIDE.md).
CLASSIFIER_PREFERENCE: tuple[tuple[str, str], ...] = (
    ("trt", "fp16"), ("trt", "int8"), ("trt", "fp32"),
    ("py", "fp32"), ("py", "fp16"), ("py", "int8"),
    ("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"),
)  # fmt: skip


def ensemble_model_names(model: str) -> list[str]:
    """Names of the models the pipeline adds for `model` (preprocess first, ensemble last)."""
    return [f"{model}_preprocess", f"{model}_pipeline"]


def choose_classifier(entries: dict[str, ModelEntry], model: str, requested: str | None = None,
                      allow_inaccurate: bool = False) -> tuple[ModelEntry | None, str]:
    """The ensemble's classifier: `requested` (`<runtime>_<precision>`, from --pipeline-model), else the
    first "ready" entry of `model` in CLASSIFIER_PREFERENCE order.

    A requested plan model that is not built yet is taken (it serves once its rebuild_engine.sh ran);
    a requested variant that missed its tolerance only with `allow_inaccurate`.

    Returns:
        (entry or None, one line saying why it was chosen or why none could be).
    """
    ours = {(e.runtime, e.precision): e for e in entries.values() if e.base_model == model}
    if requested is not None:
        e = entries.get(f"{model}_{requested}")
        if e is None:
            raise UserError(f"--pipeline-model {requested}: {model}_{requested} was not built; choose one of "
                            + ", ".join(sorted(f"{r}_{p}" for r, p in ours)))
        if e.status == "inaccurate" and not allow_inaccurate:
            raise UserError(f"--pipeline-model {requested}: {e.name} missed its fidelity tolerance ({e.status_reason}); "
                            "pass --allow-inaccurate or choose another variant")
        note = "" if e.status == "ready" else f" (status {e.status}: {e.status_reason})"
        return e, f"chosen with --pipeline-model {requested}{note}"
    for key in CLASSIFIER_PREFERENCE:
        e = ours.get(key)
        if e is not None and e.status == "ready":
            skipped = [f"{e2.name} ({e2.status})" for k2, e2 in ours.items()
                       if e2.status != "ready" and CLASSIFIER_PREFERENCE.index(k2) < CLASSIFIER_PREFERENCE.index(key)]
            why = f"first ready variant in the preference order {'>'.join('_'.join(k) for k in CLASSIFIER_PREFERENCE)}"
            return e, why + (f"; passed over {', '.join(skipped)}" if skipped else "")
    have = ", ".join(f"{e.name} ({e.status})" for e in ours.values()) or "none"
    return None, f"no classifier variant of {model} is ready (have: {have})"


def _io_of(entry: ModelEntry) -> tuple[TensorSpec, TensorSpec]:
    if len(entry.inputs) != 1 or len(entry.outputs) != 1:
        raise BuildFailure(f"{entry.name}: expected one input and one output, found {len(entry.inputs)} and "
                           f"{len(entry.outputs)} (repo-gen bug)")
    inp, out = entry.inputs[0], entry.outputs[0]
    return TensorSpec(inp.name, inp.data_type, list(inp.dims)), TensorSpec(out.name, out.data_type, list(out.dims))


def write_preprocess_model(
    model_dir: Path,
    name: str,
    version: int,
    data: dict,
    output: TensorSpec,
    max_batch: int,
    max_queue_delay_us: int = 100,
    instance_count: int = 1,
    decode_threads: int = 0,
) -> list[str]:
    """The python-backend model that turns encoded images into the classifier's input tensor.

    Args:
        data: the model's data config (`DataConfig.to_dict()`): size, interpolation, crop, mean, std.
        output: name, dtype and dims of the classifier input it feeds.
        decode_threads: images decoded at once per instance; 0 means one per CPU the server may use.
    """
    size = int(data["input_size"][1])
    if output.dims != [3, size, size]:
        raise BuildFailure(f"{name}: classifier input dims {output.dims} do not match the data config size {size} (repo-gen bug)")
    spec = ModelConfigSpec(
        name=name,
        template="python",
        max_batch_size=max_batch,
        inputs=[TensorSpec(IMAGE_INPUT, "TYPE_STRING", [1])],
        outputs=[output],
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instance_count,
        instance_kind="KIND_CPU",
        parameters={
            "image_size": str(size),
            "interpolation": str(data["interpolation"]),
            "crop_pct": repr(float(data["crop_pct"])),
            "mean": ",".join(repr(float(v)) for v in data["mean"]),
            "std": ",".join(repr(float(v)) for v in data["std"]),
            "decode_threads": str(decode_threads),
        },
    )
    vdir = model_dir / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PREPROCESS_FILE, vdir / "preprocess.py")
    code = render_template("preprocess_model.py.j2", input_name=IMAGE_INPUT, output_name=output.name)
    (vdir / "model.py").write_text(code)
    (model_dir / "config.pbtxt").write_text(render_config(spec))
    return ["config.pbtxt", f"{version}/model.py", f"{version}/preprocess.py"]


def write_ensemble_model(
    model_dir: Path,
    name: str,
    version: int,
    preprocess: str,
    classifier: str,
    pixels: TensorSpec,
    logits: TensorSpec,
    labels: list[str],
    max_batch: int,
) -> list[str]:
    """The ensemble: IMAGE -> preprocess -> classifier -> logits (with labels for class_count)."""
    out = TensorSpec(logits.name, logits.data_type, logits.dims, label_filename=LABELS_FILE)
    spec = ModelConfigSpec(
        name=name,
        template="ensemble",
        max_batch_size=max_batch,
        inputs=[TensorSpec(IMAGE_INPUT, "TYPE_STRING", [1])],
        outputs=[out],
        max_queue_delay_us=None,
        ensemble_steps=[
            EnsembleStep(preprocess, -1, {IMAGE_INPUT: IMAGE_INPUT}, {pixels.name: "pixels"}),
            EnsembleStep(classifier, -1, {pixels.name: "pixels"}, {logits.name: logits.name}),
        ],
    )
    # An ensemble needs a version directory, even an empty one.
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    return write_config_and_labels(model_dir, spec, labels)


def write_pipeline(cfg: Any, tx: Any, classifiers: list[ModelEntry],
                   labels: list[str]) -> tuple[list[ModelEntry], str | None]:
    """Stage `<model>_preprocess` and `<model>_pipeline` in `tx` for the staged `classifiers`.

    Returns:
        (the entries to add, None) or, when no classifier variant is ready, ([], the reason).
    """
    pre_name, ens_name = ensemble_model_names(cfg.model)
    target, why = choose_classifier({e.name: e for e in classifiers}, cfg.model, cfg.pipeline_model, cfg.allow_inaccurate)
    if target is None:
        return [], f"pipeline not written: {why}"
    pixels, logits = _io_of(target)
    max_batch = min(cfg.max_batch, target.max_batch_size) if target.max_batch_size > 0 else cfg.max_batch
    data = cfg.data.to_dict()

    pre_files = write_preprocess_model(tx.model_dir(pre_name), pre_name, cfg.version, data, pixels, max_batch,
                                       max_queue_delay_us=cfg.max_queue_delay_us)
    ens_files = write_ensemble_model(tx.model_dir(ens_name), ens_name, cfg.version, pre_name, target.name,
                                     pixels, logits, labels, max_batch)
    image = TensorSpec(IMAGE_INPUT, "TYPE_STRING", [1])
    scores = TensorSpec(logits.name, logits.data_type, logits.dims, label_filename=LABELS_FILE)
    compatible: list[str] = []
    incompatible: list[str] = []
    for e in sorted(classifiers, key=lambda e: e.name):
        if e.base_model != cfg.model or e.name == target.name or len(e.inputs) != 1:
            continue
        ok = e.inputs[0].data_type == pixels.data_type and (e.max_batch_size == 0 or e.max_batch_size >= max_batch)
        (compatible if ok else incompatible).append(e.name)
    readme = render_template(
        "pipeline_README.md.j2", ensemble=ens_name, model=cfg.model, input=IMAGE_INPUT, output=logits.name,
        preprocess=pre_name, classifier=target.name, why=why, pixels_name=pixels.name, pixels_dtype=pixels.data_type,
        max_batch=max_batch, compatible=compatible, incompatible=incompatible)
    (tx.model_dir(ens_name) / "README.md").write_text(readme)
    ens_files.append("README.md")
    common = dict(base_model=cfg.model, max_batch_size=max_batch, data=data)
    return [
        ModelEntry(name=pre_name, runtime="py", backend="python", precision=pixels.data_type.removeprefix("TYPE_").lower(),
                   versions=tx.staged_versions(pre_name, cfg.version), files=[f"{pre_name}/{f}" for f in pre_files],
                   status_reason="encoded image bytes -> classifier input (copy of repo_gen/data/preprocess.py)",
                   inputs=[image], outputs=[pixels], extra={"feeds": target.name}, **common),
        ModelEntry(name=ens_name, runtime="ensemble", backend="ensemble", precision=target.precision,
                   versions=tx.staged_versions(ens_name, cfg.version), files=[f"{ens_name}/{f}" for f in ens_files],
                   status_reason=f"image bytes -> {pre_name} -> {target.name}; top-k via class_count",
                   inputs=[image], outputs=[scores],
                   extra={"steps": [pre_name, target.name], "classifier": target.name, "classifier_choice": why,
                          "input": IMAGE_INPUT, "output": logits.name}, **common),
    ], None
