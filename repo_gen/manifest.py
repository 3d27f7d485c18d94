"""The manifest `repo-gen.json` at the root of every repository: schema, types, loading.

Schema 2 (written since repo-gen 0.1.0 after the typed-results redesign)::

    {
      "schema": 2,
      "models": {                       # one entry per Triton model repo-gen created
        "<name>": {
          "name": str, "base_model": str,
          "runtime": "onnx" | "py" | "trt" | "ensemble",
          "backend": "onnxruntime" | "python" | "tensorrt" | "ensemble",
          "precision": "fp32" | "fp16" | "int8",
          "versions": [int], "files": [str],            # files relative to the repository root
          "status": "ready" | "not_built" | "inaccurate", "status_reason": str,
          "max_batch_size": int,
          "inputs":  [{"name", "data_type", "dims", "label_filename", "optional"}],
          "outputs": [... the same ...],                # Triton's view: no batch dimension
          "fidelity": null | {"metrics": {...}, "tolerance": null | {"metric": str, "value": float},
                              "graph": str},            # this model's own graph vs FP32
          "data": {...},                                # preprocessing (DataConfig.to_dict())
          "extra": {...}                                # runtime details: a plan's profile, engine,
        }                                               # plugin_libs, tensorrt_version; tune's "tuning"
      },
      "builds": {"<model>": {                           # the last build of each base model
          "model", "repo_gen_version", "python", "options" (BuildConfig.to_dict()),
          "weights", "export_check", "variants" ([PrecisionVariant.record()]), "timings_s",
          "notes", "cache"}}
    }

Schema 1 (before): no inputs/outputs; each entry's fidelity lived in `extra["fidelity"]`, mixing
metrics with a `trt` sub-record and a `tolerance`. `load_manifest` upgrades it on read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repo_gen.config import validate_model_name
from repo_gen.errors import UserError
from repo_gen.results import Fidelity, tensor_specs
from repo_gen.triton.config import TensorSpec

MANIFEST_NAME = "repo-gen.json"
MANIFEST_SCHEMA = 2
READABLE_SCHEMAS = (1, 2)


@dataclass
class ModelEntry:
    """One Triton model that repo-gen created (a row of the manifest).

    Attributes:
        status: "ready" (all files present), "not_built" (e.g. a plan that needs TensorRT),
            "inaccurate" (missed its fidelity tolerance; not served unless allowed).
        backend: Triton backend name ("onnxruntime", "python", "tensorrt", "ensemble").
        files: paths relative to the repository root.
        fidelity: this model's graph vs FP32; None for FP32 models, the preprocess model and ensembles.
        extra: runtime-specific details (see the module docstring).
    """

    name: str
    base_model: str
    runtime: str
    backend: str
    precision: str
    versions: list[int]
    files: list[str]
    status: str = "ready"
    status_reason: str = ""
    max_batch_size: int = 0
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    fidelity: Fidelity | None = None
    data: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelEntry:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["inputs"] = tensor_specs(d.get("inputs"))
        known["outputs"] = tensor_specs(d.get("outputs"))
        known["fidelity"] = Fidelity.from_dict(d.get("fidelity"))
        return cls(**known)


@dataclass
class Manifest:
    """The whole manifest, loaded into types (`builds` stays JSON: it is a record for people)."""

    models: dict[str, ModelEntry] = field(default_factory=dict)
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema: int = MANIFEST_SCHEMA

    def of_backend(self, backend: str) -> dict[str, ModelEntry]:
        return {n: e for n, e in self.models.items() if e.backend == backend}


def _upgrade_entry_v1(entry: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 model entry in schema-2 form: fidelity out of `extra`, metrics apart from tolerance."""
    entry = dict(entry)
    extra = dict(entry.get("extra") or {})
    old = extra.pop("fidelity", None)
    if "fidelity" not in entry:
        fid = None
        if isinstance(old, dict) and old:
            tol = old.get("tolerance")
            metrics = {k: v for k, v in old.items() if k not in ("trt", "tolerance")}
            fid = {"metrics": metrics, "tolerance": tol if isinstance(tol, dict) else None, "graph": ""}
        entry["fidelity"] = fid
    entry["extra"] = extra
    entry.setdefault("inputs", [])
    entry.setdefault("outputs", [])
    return entry


def read_manifest(repo: Path) -> dict[str, Any]:
    """The manifest of `repo` as JSON, upgraded to the current schema and checked (names, file
    paths); an empty one when the repository has none. `load_manifest` gives the typed form."""
    path = Path(repo) / MANIFEST_NAME
    if not path.exists():
        return {"schema": MANIFEST_SCHEMA, "models": {}, "builds": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable manifest ({e}); restore it or build into a new --output") from e
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise UserError(f"{path}: not a repo-gen manifest; build into a new --output")
    schema = data.get("schema", 1)
    if schema not in READABLE_SCHEMAS:
        raise UserError(f"{path}: manifest schema {schema} is newer than this repo-gen reads "
                        f"({', '.join(map(str, READABLE_SCHEMAS))}); upgrade repo-gen")
    for name, entry in data["models"].items():
        validate_model_name(name, f"manifest {path} model")
        if not isinstance(entry, dict):
            raise UserError(f"{path}: model {name} is not a record; the manifest was tampered with")
        for f in entry.get("files", []):
            _check_relative(f, path)
    if schema == 1:
        data["models"] = {n: _upgrade_entry_v1(e) for n, e in data["models"].items()}
        data["schema"] = MANIFEST_SCHEMA
    data.setdefault("builds", {})
    return data


def load_manifest(repo: Path) -> Manifest:
    """The manifest of `repo` in types (see `read_manifest` for the checks)."""
    data = read_manifest(repo)
    return Manifest({n: ModelEntry.from_dict(e) for n, e in data["models"].items()}, dict(data["builds"]),
                    int(data["schema"]))


def _check_relative(rel: str, where: Path) -> None:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise UserError(f"{where}: file path {rel!r} escapes the repository; the manifest was tampered with")
