"""Top-1 accuracy of a repository's classifiers, served (through Triton) and in process (ONNX Runtime).

The served figure is what a user gets: labelled images are preprocessed by THE implementation
(`repo_gen.data.preprocess`, the manifest's data config), sent to `<model>_<runtime>_<precision>`
over gRPC in batches, and the argmax compared with the labels. The in-process figure runs the very
`model.onnx` of the same model directory with ONNX Runtime, so any gap is serving, not the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repo_gen.errors import BuildFailure
from repo_gen.onnx.export import INPUT_NAME, OUTPUT_NAME

_NP_DTYPE = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}


@dataclass
class AccuracyRow:
    model: str
    precision: str
    images: int
    served_top1: float | None  # %, None when not measured (no server)
    ort_top1: float | None  # %, None when the model has no ONNX file
    served_vs_ort_agreement: float | None = None  # % of images with the same argmax


def _input_dtype(model_dir: Path) -> tuple[str, type]:
    from repo_gen.triton.render import parse_config

    cfg = parse_config((model_dir / "config.pbtxt").read_text(), f"{model_dir.name}/config.pbtxt")
    dt = next(i.data_type for i in cfg.input if i.name == INPUT_NAME)
    from tritonclient.grpc import model_config_pb2 as mc

    name = mc.DataType.Name(dt)
    return name.removeprefix("TYPE_"), _NP_DTYPE[name]


def served_logits(url: str, model: str, x: np.ndarray, dtype: type = np.float32, batch: int = 8) -> np.ndarray:
    """Logits of `model` served at `url` (gRPC) for the preprocessed images `x` [N, 3, H, W]."""
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    client = grpc.InferenceServerClient(url)
    out = []
    try:
        for i in range(0, len(x), batch):
            xb: np.ndarray = np.ascontiguousarray(x[i : i + batch], dtype=dtype)
            inp = grpc.InferInput(INPUT_NAME, list(xb.shape), np_to_triton_dtype(xb.dtype))
            inp.set_data_from_numpy(xb)
            res = client.infer(model, [inp], outputs=[grpc.InferRequestedOutput(OUTPUT_NAME)])
            out.append(res.as_numpy(OUTPUT_NAME).astype(np.float32))
    except InferenceServerException as e:
        raise BuildFailure(f"{model} at {url}: inference failed ({e.message()})") from e
    finally:
        client.close()
    return np.concatenate(out)


def ort_logits(onnx_file: Path, x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    from repo_gen.onnx.runner import make_session, run_batches

    return run_batches(make_session(onnx_file), x.astype(dtype)).astype(np.float32)


def repository_accuracy(repo: Path, models: list[str], x: np.ndarray, y: np.ndarray, url: str | None = None,
                        batch: int = 8) -> list[AccuracyRow]:
    """Served (when `url` is given) and in-process top-1 of each model of `repo` on images `x`, labels `y`."""
    from repo_gen.manifest import load_manifest

    entries = load_manifest(Path(repo)).models
    rows = []
    for name in models:
        model_dir = Path(repo) / name
        _, dtype = _input_dtype(model_dir)
        onnx_files = sorted(model_dir.glob("*/model.onnx"))
        ort = ort_logits(onnx_files[-1], x, dtype) if onnx_files else None
        served = served_logits(url, name, x, dtype, batch) if url else None
        rows.append(AccuracyRow(
            model=name,
            precision=entries[name].precision if name in entries else "?",
            images=len(y),
            served_top1=_top1(served, y),
            ort_top1=_top1(ort, y),
            served_vs_ort_agreement=(float(np.mean(served.argmax(1) == ort.argmax(1)) * 100)
                                     if served is not None and ort is not None else None),
        ))
    return rows


def _top1(logits: np.ndarray | None, y: np.ndarray) -> float | None:
    return None if logits is None else float(np.mean(logits.argmax(1) == y) * 100)


def markdown(rows: list[AccuracyRow]) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = ["| model | precision | images | served top-1 % (Triton) | ONNX Runtime top-1 % | served = ORT argmax % |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.model} | {r.precision} | {r.images} | {f(r.served_top1)} | {f(r.ort_top1)} | "
              f"{f(r.served_vs_ort_agreement)} |" for r in rows]
    return "\n".join(lines)
