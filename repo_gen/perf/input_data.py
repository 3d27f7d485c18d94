"""Input data for perf_analyzer: real photos preprocessed exactly as the model expects, or random.

"Real" means: scikit-image's bundled photographs (or the user's `images_dir`), preprocessed by
`repo_gen.data.preprocess` (the one implementation the build, calibration and the served
pipeline use) with the data config that the build recorded for that model in the manifest
(`data`: size, interpolation, crop_pct, mean, std), cast to the config's input type. A model
whose numbers depend on the data (INT8 with saturating activations, early-exit logic) is then
measured on what it will see, not on uniform noise.

The file follows perf_analyzer's "Real Input Data" format: one entry per image, each a batch-1
tensor as little-endian base64 (`{"b64": ...}`; JSON number lists would be ~10x larger). For a
request of batch B perf_analyzer takes B consecutive entries, round-robin.

A model whose input is encoded image bytes (TYPE_STRING: the `<model>_pipeline` ensemble and its
`<model>_preprocess` step) gets the photos themselves, JPEG-encoded (or the user's files as they
are), each serialized as one Triton BYTES element (4-byte little-endian length, then the bytes)
and base64-encoded: random bytes are not an image, and the server would reject every request.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repo_gen.errors import UserError
from repo_gen.log import logger

INPUT_KINDS = ("real", "random")
_NUMPY_OF = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_UINT8": np.uint8, "TYPE_INT8": np.int8}
BYTES_TYPE = "TYPE_STRING"  # Triton's BYTES in model configs
JPEG_QUALITY = 90


def measurable_input(model_dir: Path) -> bool:
    """perf_analyzer can be fed this model's input: a numeric tensor, or encoded image bytes."""
    from repo_gen.errors import BuildFailure

    try:
        return model_input(model_dir).data_type in (*_NUMPY_OF, BYTES_TYPE)
    except (UserError, BuildFailure):
        return False


def takes_image_bytes(model_dir: Path) -> bool:
    from repo_gen.errors import BuildFailure

    try:
        return model_input(model_dir).data_type == BYTES_TYPE
    except (UserError, BuildFailure):
        return False


@dataclass
class ModelInput:
    """The (single) input of a model, from its config.pbtxt."""

    name: str
    data_type: str  # Triton enum name
    dims: list[int]  # without the batch dimension


def model_input(model_dir: Path) -> ModelInput:
    """Read the first input of `model_dir/config.pbtxt` with Triton's schema."""
    from tritonclient.grpc import model_config_pb2

    from repo_gen.triton.render import parse_config

    cfg_path = model_dir / "config.pbtxt"
    if not cfg_path.is_file():
        raise UserError(f"--models {model_dir.name}: {cfg_path} does not exist; is it a model of this --model-repository?")
    cfg = parse_config(cfg_path.read_text(), str(cfg_path))
    if not cfg.input:
        raise UserError(f"{cfg_path}: declares no input; perf_analyzer needs one")
    inp = cfg.input[0]
    return ModelInput(inp.name, model_config_pb2.DataType.Name(inp.data_type), list(inp.dims))


def write_input_data(
    path: Path,
    model_dir: Path,
    data: dict | None,
    kind: str = "real",
    count: int = 16,
    images_dir: Path | None = None,
    seed: int = 0,
) -> str:
    """Write the perf_analyzer `--input-data` JSON for one model and return the flag's value.

    Args:
        data: the manifest entry's `data` (preprocessing); None or empty means "unknown", which
            falls back to random data with a warning (a model repo-gen did not build).
        kind: "real" or "random" ("random" writes nothing and returns "random").
        count: images in the file (the batch of a request cycles through them).
        images_dir: user images to use instead of the bundled photos; None: bundled photos.
    Returns:
        The value to pass as `--input-data`: the file path, or "random".
    """
    if kind not in INPUT_KINDS:
        raise UserError(f"--input-data {kind}: choose real or random")
    inp = model_input(model_dir)
    if inp.data_type == BYTES_TYPE:
        if kind == "random":
            logger.info(f"{model_dir.name}: input {inp.name} takes encoded image bytes, which random bytes are not; "
                        "sending photos")
        return write_image_bytes(path, inp.name, encoded_photos(count, images_dir))
    if kind == "random":
        return "random"
    if inp.data_type not in _NUMPY_OF:
        logger.warning(f"{model_dir.name}: input {inp.name} is {inp.data_type}; real image tensors apply to numeric "
                       "inputs only, measuring with random data")
        return "random"
    if not data:
        logger.warning(f"{model_dir.name}: no preprocessing recorded in the manifest (not built by repo-gen?); "
                       "measuring with random data")
        return "random"
    tensors = real_tensors(data, count, images_dir, seed)
    want = tuple(inp.dims)
    if tensors.shape[1:] != want:
        raise UserError(f"{model_dir.name}: manifest preprocessing gives {list(tensors.shape[1:])} but the config "
                        f"expects {list(want)}; rebuild the model or use --input-data random")
    dtype = _NUMPY_OF[inp.data_type]
    entries = [{inp.name: {"b64": base64.b64encode(t.astype(np.dtype(dtype).newbyteorder("<")).tobytes()).decode()}}
               for t in tensors]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": entries}))
    return str(path)


def triton_bytes_element(payload: bytes) -> bytes:
    """One element of a Triton BYTES tensor as perf_analyzer's `b64` carries it: length, then bytes."""
    return struct.pack("<I", len(payload)) + payload


def write_image_bytes(path: Path, input_name: str, files: list[bytes]) -> str:
    """perf_analyzer input data of one BYTES element per entry (a batch-1 request of shape [1])."""
    entries = [{input_name: {"b64": base64.b64encode(triton_bytes_element(f)).decode(), "shape": [1]}} for f in files]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": entries}))
    return str(path)


def encoded_photos(count: int, images_dir: Path | None = None) -> list[bytes]:
    """`count` encoded image files: the user's (bytes as they are on disk, cycled), or the bundled
    scikit-image photos as JPEG (quality 90), which is what a client typically sends."""
    if images_dir is not None:
        from repo_gen.data.images import list_images

        paths = list_images(Path(images_dir)) if Path(images_dir).is_dir() else []
        if not paths:
            raise UserError(f"--images {images_dir}: no image files found; pass a folder of JPEG/PNG files")
        files = [p.read_bytes() for p in paths[:count]]
    else:
        from repo_gen.data.images import skimage_photos

        files = []
        for _, img in skimage_photos()[:count]:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=JPEG_QUALITY)
            files.append(buf.getvalue())
    reps = -(-count // len(files))
    return (files * reps)[:count]


def real_tensors(data: dict, count: int, images_dir: Path | None = None, seed: int = 0) -> np.ndarray:
    """`count` preprocessed images [N, C, H, W] float32 for the data config `data`."""
    from repo_gen.data.images import builtin_photos, load_dir
    from repo_gen.models import DataConfig

    cfg = DataConfig.from_dict(data)
    if images_dir is not None:
        got = load_dir(images_dir, cfg, count)
        if len(got.tensors) == 0:
            raise UserError(f"--images {images_dir}: no readable images found; pass a folder of JPEG/PNG files")
        reps = -(-count // len(got.tensors))
        return np.concatenate([got.tensors] * reps)[:count]
    # offset 3: a stream of augmentations disjoint from calibration (0) and evaluation (1).
    return builtin_photos(cfg, count, seed=seed, offset=3).tensors
