"""Client side of a served detector pipeline: image files in, detections (image pixels) out, and a drawing.

The `<model>_pipeline` ensemble does the decoding, the letterbox and the mapping back to the image;
the client only sends the file's bytes. Class names come from the ensemble's `labels` parameter.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repo_gen.errors import UserError

OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


@dataclass
class Box:
    label: str
    class_id: int
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class DetectResult:
    path: str
    boxes: list[Box] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.error, "detections": [b.__dict__ for b in self.boxes]}


def encode_labels(labels: Sequence[str]) -> str:
    """Labels as one config.pbtxt-safe string (percent-encoded, comma separated)."""
    return ",".join(urllib.parse.quote(x, safe="") for x in labels)


def decode_labels(text: str) -> list[str]:
    return [urllib.parse.unquote(x) for x in text.split(",")] if text else []


def parse_detections(outs: dict[str, np.ndarray], labels: Sequence[str], threshold: float) -> list[list[Box]]:
    """Unpad a batch of detector outputs into boxes per image, keeping scores >= threshold."""
    res = []
    for i in range(outs["num_detections"].shape[0]):
        n = int(outs["num_detections"][i, 0])
        boxes = []
        for j in range(n):
            s = float(outs["detection_scores"][i, j])
            if s < threshold:
                continue
            c = int(outs["detection_classes"][i, j])
            x1, y1, x2, y2 = (float(v) for v in outs["detection_boxes"][i, j])
            boxes.append(Box(labels[c] if 0 <= c < len(labels) else str(c), c, s, x1, y1, x2, y2))
        res.append(boxes)
    return res


class DetectClient:
    """One gRPC connection to a Triton server and one detection pipeline on it."""

    def __init__(self, url: str | None = None, model: str | None = None) -> None:
        import tritonclient.grpc as grpcclient

        from repo_gen.pipeline.client import resolve_url

        self.mod = grpcclient
        self.url = resolve_url(url, "grpc")
        try:
            self.client = grpcclient.InferenceServerClient(self.url)
            live = self.client.is_server_live()
        except Exception as e:  # noqa: BLE001 - connection errors come in many types
            raise UserError(f"--url {self.url}: no Triton server answers over grpc ({str(e).splitlines()[0][:200]}); "
                            "start one with `repo-gen serve --model-repository DIR` or pass --url HOST:PORT") from e
        if not live:
            raise UserError(f"--url {self.url}: the Triton server is not live")
        self.model = model or self._find()
        if not self.client.is_model_ready(self.model):
            raise UserError(f"--model {self.model}: not ready on {self.url}; pass a served detection pipeline")
        cfg = self.client.get_model_config(self.model).config
        if [o.name for o in cfg.output] != list(OUTPUTS):
            raise UserError(f"--model {self.model}: not a detection pipeline (outputs {[o.name for o in cfg.output]})")
        self.labels = decode_labels(cfg.parameters["labels"].string_value) if "labels" in cfg.parameters else []

    def _find(self) -> str:
        ready = []
        for m in self.client.get_model_repository_index().models:
            if m.name.endswith("_pipeline") and m.state == "READY":
                cfg = self.client.get_model_config(m.name).config
                if [o.name for o in cfg.output] == list(OUTPUTS):
                    ready.append(m.name)
        if len(ready) != 1:
            raise UserError(f"{self.url}: {'no' if not ready else 'several'} detection pipelines ready "
                            f"({', '.join(ready) or 'build one with repo-gen build --model ssdlite_mobilevit_xxs'}); "
                            "pass --model NAME")
        return ready[0]

    def detect(self, data: bytes, threshold: float) -> list[Box]:
        inp = self.mod.InferInput("image", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        r = self.client.infer(self.model, [inp], outputs=[self.mod.InferRequestedOutput(o) for o in OUTPUTS])
        return parse_detections({o: r.as_numpy(o) for o in OUTPUTS}, self.labels, threshold)[0]

    def close(self) -> None:
        self.client.close()


def detect_files(paths: Sequence[str | Path], url: str | None, model: str | None,
                 threshold: float) -> list[DetectResult]:
    """Detections for each file, in order; a file that cannot be read or decoded carries `error` alone."""
    from repo_gen.pipeline.client import _server_message, read_images

    ok, bad = read_images(paths)
    results = {r.path: DetectResult(r.path, error=r.error) for r in bad}
    if ok:
        client = DetectClient(url, model)
        try:
            for name, data in ok:
                try:
                    results[name] = DetectResult(name, client.detect(data, threshold))
                except client.mod.InferenceServerException as e:  # type: ignore[attr-defined]
                    results[name] = DetectResult(name, error=_server_message(e))
        finally:
            client.close()
    return [results[str(p)] for p in paths]


def draw(image_path: str | Path, boxes: Sequence[Box], out: Path) -> Path:
    """Write the image with its boxes and `label score` captions (PNG, atomically)."""
    import io

    from PIL import Image, ImageDraw

    from repo_gen.fileio import write_atomic

    img: Any = Image.open(image_path).convert("RGB")
    d = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 150))
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]
    for b in boxes:
        color = palette[b.class_id % len(palette)]
        d.rectangle([b.x1, b.y1, b.x2, b.y2], outline=color, width=width)
        text = f"{b.label} {b.score:.2f}"
        tx, ty = b.x1, max(0.0, b.y1 - 12)
        left, top, right, bottom = d.textbbox((tx, ty), text)
        d.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=color)
        d.text((tx, ty), text, fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, buf.getvalue())
    return out
