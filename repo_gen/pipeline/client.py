"""Send image files to a `<model>_pipeline` ensemble and read back the top-k class names.

One request per file, so a file the server cannot decode fails alone; up to `concurrency`
requests are in flight at once (Triton batches them). Top-k comes from Triton's
classification extension (`class_count` on the output), so the scores are the model's logits.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repo_gen.errors import UserError

DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
PIPELINE_SUFFIX = "_pipeline"


@dataclass
class Prediction:
    label: str
    score: float
    index: int


@dataclass
class ClassifyResult:
    path: str
    predictions: list[Prediction] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.error,
                "top_k": [{"label": p.label, "score": p.score, "index": p.index} for p in self.predictions]}


def parse_classification(entry: bytes | str) -> Prediction:
    """One entry of Triton's classification output, "score:index:label" (the label may hold ':')."""
    text = entry.decode() if isinstance(entry, bytes) else str(entry)
    score, index, *label = text.split(":", 2)
    return Prediction(label[0] if label else index, float(score), int(index))


def _modules(protocol: str) -> tuple[Any, Any]:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client_mod
        elif protocol == "http":
            import tritonclient.http as client_mod
        else:
            raise UserError(f"--protocol {protocol}: choose grpc or http")
        from tritonclient.utils import InferenceServerException
    except ImportError as e:
        raise UserError(f"tritonclient is not installed ({e}); pip install 'tritonclient[all]'") from e
    return client_mod, InferenceServerException


def resolve_url(url: str | None, protocol: str) -> str:
    """`HOST:PORT`; None means 127.0.0.1 on Triton's default port for the protocol (8001 gRPC, 8000 HTTP)."""
    if url is None:
        return f"127.0.0.1:{DEFAULT_PORTS[protocol]}"
    for prefix in ("http://", "https://", "grpc://"):
        if url.startswith(prefix):
            url = url[len(prefix):]
    return url.rstrip("/")


class PipelineClient:
    """A connection to one Triton server and one pipeline model on it."""

    def __init__(self, url: str | None = None, model: str | None = None, protocol: str = "grpc",
                 concurrency: int = 4):
        self.protocol = protocol
        self.mod, self.exc = _modules(protocol)
        self.url = resolve_url(url, protocol)
        self.concurrency = max(1, concurrency)
        kwargs = {"concurrency": self.concurrency} if protocol == "http" else {}
        try:
            self.client = self.mod.InferenceServerClient(self.url, **kwargs)
            live = self.client.is_server_live()
        except Exception as e:  # noqa: BLE001 - connection errors come in many types
            raise UserError(f"--url {self.url}: no Triton server answers over {protocol} ({_short(e)}); "
                            "start one with `repo-gen serve --model-repository DIR` or pass --url HOST:PORT") from e
        if not live:
            raise UserError(f"--url {self.url}: the Triton server is not live")
        self.model = model or self._find_pipeline()
        if not self.client.is_model_ready(self.model):
            raise UserError(f"--model {self.model}: not ready on {self.url}; ready pipelines: "
                            f"{', '.join(self._ready_pipelines()) or 'none'}")
        meta = self.client.get_model_metadata(self.model)
        inputs, outputs = _field(meta, "inputs"), _field(meta, "outputs")
        if len(inputs) != 1 or _field(inputs[0], "datatype") != "BYTES":
            raise UserError(f"--model {self.model}: takes {[_field(i, 'name') for i in inputs]}, not one BYTES "
                            "input of encoded images; pass a *_pipeline model")
        self.input_name = _field(inputs[0], "name")
        self.output_name = _field(outputs[0], "name")

    def _ready_pipelines(self) -> list[str]:
        index = self.client.get_model_repository_index()
        models = index.get("models", []) if isinstance(index, dict) else index
        if not isinstance(models, list):  # gRPC returns a message with a `models` field
            models = list(index.models)
        ready = []
        for m in models:
            name, state = _field(m, "name"), _field(m, "state")
            if name.endswith(PIPELINE_SUFFIX) and state == "READY":
                ready.append(name)
        return sorted(set(ready))

    def _find_pipeline(self) -> str:
        ready = self._ready_pipelines()
        if len(ready) == 1:
            return ready[0]
        if not ready:
            raise UserError(f"{self.url}: no *{PIPELINE_SUFFIX} model is ready; build one (repo-gen build writes "
                            "<model>_pipeline by default) and serve it, or pass --model NAME")
        raise UserError(f"{self.url}: several pipelines are ready ({', '.join(ready)}); pass --model NAME")

    def _send(self, data: bytes, top_k: int) -> Any:
        """Start one request; returns an object whose result() waits for it (and raises its error)."""
        inp = self.mod.InferInput(self.input_name, [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        out = self.mod.InferRequestedOutput(self.output_name, class_count=top_k)
        if self.protocol == "http":  # runs on the client's own pool of `concurrency` connections
            return _HttpFuture(self.client.async_infer(self.model, [inp], outputs=[out]))
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def done(result, error):
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

        self.client.async_infer(self.model, [inp], done, outputs=[out])
        return fut

    def classify_bytes(self, items: Sequence[tuple[str, bytes]], top_k: int = 5) -> list[ClassifyResult]:
        """Classify (name, encoded bytes) pairs; results in the same order, errors per item."""
        if top_k < 1:
            raise UserError(f"--top-k {top_k}: must be >= 1")
        results = [ClassifyResult(name) for name, _ in items]
        pending: list[tuple[int, Any]] = []

        def drain(keep: int) -> None:
            while len(pending) > keep:
                i, fut = pending.pop(0)
                try:
                    res = fut.result()
                    results[i].predictions = [parse_classification(e) for e in res.as_numpy(self.output_name).reshape(-1)]
                except self.exc as e:
                    results[i].error = _server_message(e)

        for i, (_, data) in enumerate(items):
            pending.append((i, self._send(data, top_k)))
            drain(self.concurrency - 1)
        drain(0)
        return results

    def close(self) -> None:
        self.client.close()


class _HttpFuture:
    def __init__(self, req: Any):
        self.req = req

    def result(self) -> Any:
        return self.req.get_result()


def _field(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def _server_message(e: Exception) -> str:
    msg = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
    prefix = "in ensemble '"
    if msg.startswith(prefix) and "', " in msg:  # "in ensemble 'x_pipeline', <what the step said>"
        msg = msg.split("', ", 1)[1]
    return msg.removeprefix("image 0 of this request: ")


def read_images(paths: Sequence[str | Path]) -> tuple[list[tuple[str, bytes]], list[ClassifyResult]]:
    """Read files; returns (readable (name, bytes) pairs, results carrying the error of each unreadable one)."""
    ok: list[tuple[str, bytes]] = []
    bad: list[ClassifyResult] = []
    for p in paths:
        path = Path(p)
        try:
            data = path.read_bytes()
        except IsADirectoryError:
            bad.append(ClassifyResult(str(p), error="is a directory, not an image file"))
            continue
        except OSError as e:
            bad.append(ClassifyResult(str(p), error=f"cannot read it ({e.strerror or e})"))
            continue
        if not data:
            bad.append(ClassifyResult(str(p), error="empty file (0 bytes)"))
            continue
        ok.append((str(p), data))
    return ok, bad


def classify_files(paths: Sequence[str | Path], url: str | None = None, model: str | None = None,
                   top_k: int = 5, protocol: str = "grpc", concurrency: int = 4) -> list[ClassifyResult]:
    """Top-k labels for each file, in the order given; unreadable files carry `error`.

    Args:
        url: HOST:PORT; None means 127.0.0.1 and Triton's default port for `protocol`.
        model: the pipeline model; None means the only `*_pipeline` model ready on the server.
    """
    ok, bad = read_images(paths)
    by_name = {r.path: r for r in bad}
    if ok:
        client = PipelineClient(url, model, protocol, concurrency)
        try:
            for r in client.classify_bytes(ok, top_k):
                by_name[r.path] = r
        finally:
            client.close()
    return [by_name[str(p)] for p in paths]
