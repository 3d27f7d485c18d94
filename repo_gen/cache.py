"""Content-addressed cache of build stage artifacts, so a re-run skips stages whose inputs did not change.

A stage's key is the sha256 of everything that decides its output:

    the weights      "checkpoint:<sha256 of the file>" or "random:<seed>" (timm's --pretrained
                     download is not cached: the hub may change what it serves under a name)
    the model        repo-gen name, timm name, image size, opset, the batch sizes checked
    the options      each stage's own (a precision variant adds its calibration data digest, method,
                     tolerances, io dtype ...)
    the tools        versions of torch, timm, onnx, onnxruntime, onnx-graphsurgeon, numpy, repo-gen,
                     plus a digest of the repo-gen source files of the stage (so editing the
                     exporter invalidates its entries even when the version number did not move)

An entry is a directory `cache_dir()/stages/<key>/` holding the artifacts and `meta.json` (their
sha256, the stage's report values, the seconds the stage took when it ran). Entries are written
into a temporary directory and renamed into place, so a reader sees a complete entry or none;
every artifact is checked against its sha256 when it is restored, and an entry that fails the
check is deleted and treated as a miss. The cache can never fail a build: a cache that cannot be
read is a miss, one that cannot be written is a warning. Errors writing the *destination*
(the build's own staging directory, e.g. a full disk) are not the cache's: they propagate.

Usage (see `repo_gen.build`):

    cache = StageCache.for_config(cfg)            # disabled by BuildConfig.use_cache=False / --no-cache
    key = cache.key("fp32", fp32_stage_inputs(cfg))
    export = restore_fp32(cache, key, work / "fp32.onnx", cfg)    # an ExportResult, or None
    if export is None:
        export = ... run the stage ...
        store_fp32(cache, key, export, seconds)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repo_gen import __version__
from repo_gen.fileio import file_sha256
from repo_gen.log import logger, warn_once

if TYPE_CHECKING:
    from repo_gen.precision import PrecisionVariant
    from repo_gen.results import ExportResult

CACHE_SCHEMA = 2  # 2: entries hold the typed stage results (ExportResult, PrecisionVariant.record())
MAX_ENTRIES = 48  # least recently used entries beyond this are removed (a mobilevit_s entry is ~22 MB)
META = "meta.json"
_TOOLS = ("torch", "timm", "onnx", "onnxruntime", "onnx-graphsurgeon", "numpy", "onnxconverter-common", "pillow",
          "scikit-image")  # the last three: FP16 conversion, image decoding, the built-in calibration photos
_PKG_ROOT = Path(__file__).resolve().parent
# repo-gen sources whose code decides each stage's artifacts (relative to the package).
_FP32_SOURCES = ("torch", "onnx/export.py", "onnx/passes.py", "onnx/runner.py", "models", "build.py", "compare.py",
                 "cache.py", "results.py", "tasks.py")
STAGE_SOURCES = {
    "fp32": _FP32_SOURCES,
    "precision": (*_FP32_SOURCES, "onnx", "precision", "data"),
}


class CacheMiss(Exception):
    """An entry that cannot be used (absent, incomplete, corrupt); never leaves this module."""


@functools.cache
def tool_versions() -> dict[str, str]:
    """Installed versions of the packages that shape stage artifacts (read from metadata, no imports)."""
    from importlib import metadata

    out = {"repo_gen": __version__}
    for name in _TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.cache
def source_digest(parts: tuple[str, ...]) -> str:
    """sha256 over the repo-gen source files under `parts` (paths relative to the package); once
    per process, as for `tool_versions`: neither changes while a build runs."""
    h = hashlib.sha256()
    files: list[Path] = []
    for part in parts:
        p = _PKG_ROOT / part
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.is_file() else []
    for f in files:
        h.update(str(f.relative_to(_PKG_ROOT)).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def dir_digest(path: Path | None) -> str | None:
    """Content digest of a data directory (relative names + bytes of every file); None stays None."""
    if path is None:
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


def weights_identity(cfg: Any) -> str | None:
    """What the weights are, by content: None when they cannot be pinned (timm's --pretrained)."""
    if cfg.pretrained:
        return None
    if cfg.weights is not None:
        try:
            return f"checkpoint:{file_sha256(Path(cfg.weights))}"
        except OSError:  # unreadable: not cacheable; the loader reports it
            return None
    return f"random:{cfg.seed}"


def fp32_stage_inputs(cfg: Any, check_batches: list[int]) -> dict[str, Any] | None:
    """Inputs of load -> export -> check -> cleanup -> check (the FP32 ONNX file); None: not cacheable."""
    weights = weights_identity(cfg)
    if weights is None:
        return None
    return {
        "weights": weights,
        "model": cfg.model,
        "timm_name": cfg.spec.timm_name,
        "image_size": cfg.image_size,
        "opset": cfg.opset,
        "check_batches": list(check_batches),
        "seed": cfg.seed,  # also seeds the export check's inputs
    }


def precision_stage_inputs(cfg: Any, fp32_key: str) -> dict[str, Any]:
    """Inputs shared by the precision variants: the FP32 stage they start from plus their options
    (each variant's key adds its precision: `variant_keys`)."""
    return {
        "fp32": fp32_key,
        "io_dtype": cfg.io_dtype,
        "calib_dir": dir_digest(cfg.calib_dir),
        "calib_count": cfg.calib_count,
        "calib_method": cfg.calib_method,
        "eval_dir": dir_digest(cfg.eval_dir),
        "eval_count": cfg.eval_count,
        "fp16_tolerance": cfg.fp16_tolerance,
        "int8_tolerance": cfg.int8_tolerance,
        "int8_top1_tolerance": cfg.int8_top1_tolerance,
        "accuracy_tolerance": cfg.accuracy_tolerance,
        "data": cfg.data.to_dict(),  # calibration and evaluation images go through it
        "labels": list(cfg.model_data.labels.names),  # map eval class folders to classes (accuracy)
        "allow_inaccurate": cfg.allow_inaccurate,
        "seed": cfg.seed,
    }


@dataclass
class CacheEntry:
    key: str
    path: Path
    meta: dict[str, Any]

    @property
    def seconds(self) -> float:
        return float(self.meta.get("seconds", 0.0))

    def restore(self, name: str, dst: Path) -> None:
        """Copy artifact `name` to `dst`, checking its sha256 on the way.

        Raises CacheMiss when the cached copy is unreadable or corrupt (dst is removed);
        OSError from writing `dst` propagates (it is the build's disk, not the cache's).
        """
        expected = self.meta.get("files", {}).get(name)
        if expected is None:
            raise CacheMiss(f"{name} not in entry")
        h = hashlib.sha256()
        try:
            src = open(self.path / name, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise CacheMiss(f"{name}: {e}") from e
        try:
            with src, open(dst, "wb") as out:
                while True:
                    try:
                        chunk = src.read(1 << 20)
                    except OSError as e:
                        raise CacheMiss(f"{name}: {e}") from e
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
        except CacheMiss:
            with contextlib.suppress(OSError):
                os.unlink(dst)
            raise
        if h.hexdigest() != expected:
            with contextlib.suppress(OSError):
                os.unlink(dst)
            raise CacheMiss(f"{name}: sha256 mismatch (corrupt entry)")


@dataclass
class StageCache:
    """The stage cache under `root` (default `cache_dir()/stages`); `enabled=False` makes every call a no-op."""

    root: Path | None = None
    enabled: bool = True
    hits: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line per reuse, for the build report
    restore_timings: dict[str, float] = field(default_factory=dict)  # "reuse <stage> (stage cache)" -> s

    @classmethod
    def for_config(cls, cfg: Any) -> StageCache:
        return cls(enabled=bool(getattr(cfg, "use_cache", True)))

    def _root(self) -> Path:
        if self.root is None:
            from repo_gen.tools import cache_dir

            self.root = cache_dir() / "stages"
        return self.root

    def key(self, stage: str, inputs: dict[str, Any] | None) -> str | None:
        if not self.enabled or inputs is None:
            return None
        blob = {
            "schema": CACHE_SCHEMA,
            "stage": stage,
            "inputs": inputs,
            "tools": tool_versions(),
            "sources": source_digest(STAGE_SOURCES.get(stage, STAGE_SOURCES["precision"])),
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, key: str | None) -> CacheEntry | None:
        if key is None:
            return None
        path = self._root() / key
        try:
            meta = json.loads((path / META).read_text())
            if meta.get("schema") != CACHE_SCHEMA or meta.get("key") != key:
                raise CacheMiss("schema/key mismatch")
            for name in meta.get("files", {}):
                if not (path / name).is_file():
                    raise CacheMiss(f"{name} missing")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, CacheMiss) as e:
            logger.warning(f"stage cache: entry {key[:12]} unusable ({e}); rebuilding it")
            self.discard(key)
            return None
        with contextlib.suppress(OSError):
            os.utime(path / META)  # least-recently-used order for pruning
        return CacheEntry(key, path, meta)

    def restore(self, entry: CacheEntry, files: dict[str, Path]) -> bool:
        """Restore every artifact of `entry` (name -> destination); False (and a warning) when it is corrupt."""
        try:
            for name, dst in files.items():
                entry.restore(name, dst)
        except CacheMiss as e:
            logger.warning(f"stage cache: entry {entry.key[:12]} unusable ({e}); rebuilding it")
            self.discard(entry.key)
            return False
        return True

    def put(self, key: str | None, files: dict[str, Path], meta: dict[str, Any], seconds: float) -> None:
        """Store artifacts atomically; any failure (disk full, read-only cache) is a warning, never an error."""
        if key is None:
            return
        root = self._root()
        tmp: Path | None = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            if (root / key / META).is_file():
                return
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
            digests = {}
            for name, src in files.items():
                shutil.copyfile(src, tmp / name)
                digests[name] = file_sha256(tmp / name)
            record = {"schema": CACHE_SCHEMA, "key": key, "files": digests, "seconds": round(seconds, 3),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **meta}
            (tmp / META).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, root / key)
                tmp = None
            except OSError:  # another build stored the same key first: theirs is as good as ours
                pass
        except OSError as e:
            warn_once(f"stage cache: could not store an entry in {root} ({e.strerror or e}); builds still work, "
                      "only without reuse (free space there or pass --no-cache)")
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        self.prune()

    def discard(self, key: str) -> None:
        shutil.rmtree(self._root() / key, ignore_errors=True)

    def prune(self, max_entries: int = MAX_ENTRIES) -> None:
        root = self._root()
        try:
            entries = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
            stale_tmp = [p for p in root.iterdir() if p.name.startswith(".tmp-") and time.time() - p.stat().st_mtime > 3600]
        except OSError:
            return
        for p in stale_tmp:  # left by a killed build
            shutil.rmtree(p, ignore_errors=True)
        if len(entries) <= max_entries:
            return

        def last_used(p: Path) -> float:
            try:
                return (p / META).stat().st_mtime
            except OSError:
                return 0.0

        for p in sorted(entries, key=last_used)[: len(entries) - max_entries]:
            shutil.rmtree(p, ignore_errors=True)

    def note_hit(self, stage: str, timing: str, entry: CacheEntry, restore_s: float) -> None:
        """Record a reuse: in `hits` (the manifest), `notes` (the report) and `restore_timings[timing]`."""
        saved = max(0.0, entry.seconds - restore_s)
        self.hits.append({"stage": stage, "key": entry.key, "saved_s": round(saved, 3),
                          "restore_s": round(restore_s, 3)})
        note = f"reused {stage} from the stage cache (entry {entry.key[:12]}): saved about {saved:.1f} s"
        self.notes.append(note)
        self.restore_timings[timing] = round(restore_s, 3)
        logger.info(note)

    def summary(self) -> dict[str, Any]:
        """Manifest record: which stages were reused and the seconds saved (0 entries when disabled or all new)."""
        return {"enabled": self.enabled, "reused": list(self.hits),
                "saved_s": round(sum(h["saved_s"] for h in self.hits), 3)}


# -- the build's use of the cache: the stages' own result types go in and come out ----------------


def restore_fp32(cache: StageCache, key: str | None, fp32_path: Path, cfg: Any) -> ExportResult | None:
    """On a hit: write the cached FP32 ONNX to `fp32_path` and return the stage's result as it was
    made (with this build's weights path and export tolerance). None on a miss (the caller runs the stage)."""
    from repo_gen.results import ExportResult

    entry = cache.get(key)
    if entry is None:
        return None
    t0 = time.perf_counter()
    try:
        result = ExportResult.from_dict(fp32_path, entry.meta["result"])
    except (KeyError, TypeError, ValueError):
        cache.discard(entry.key)
        return None
    if not cache.restore(entry, {"fp32.onnx": fp32_path}):
        return None
    result.weights.path = str(cfg.weights) if cfg.weights is not None else None
    result.check.tolerance = cfg.export_tolerance
    if not result.weights.trained:
        logger.warning(f"{cfg.model}: no --weights and no --pretrained: using RANDOM weights (seed {cfg.seed}); "
                       "the model is UNTRAINED and its predictions are meaningless")
    cache.note_hit("load + export + checks (fp32)", "reuse fp32 (stage cache)", entry, time.perf_counter() - t0)
    return result


def store_fp32(cache: StageCache, key: str | None, result: ExportResult, seconds: float) -> None:
    cache.put(key, {"fp32.onnx": result.onnx}, {"stage": "fp32", "result": result.to_dict()}, seconds)


def variant_keys(cache: StageCache, fp32_key: str | None, cfg: Any, precisions: list[str]) -> dict[str, str | None]:
    """The stage-cache key of each precision variant; the calibration and evaluation folders are
    hashed once for all of them (None: not cacheable)."""
    if fp32_key is None or not cache.enabled:
        return {p: None for p in precisions}
    shared = precision_stage_inputs(cfg, fp32_key)
    return {p: cache.key("precision", {**shared, "precision": p}) for p in precisions}


def restore_variants(cache: StageCache, keys: dict[str, str | None], work: Path) -> dict[str, PrecisionVariant]:
    """Precision variants found in the cache under `keys` (precision -> key, from `variant_keys`),
    by precision; their ONNX files are restored into `work`.

    A variant's artifacts are its serve and TensorRT ONNX graphs; the rest of it (fidelity,
    status, report: `PrecisionVariant.record()`) is kept in the entry's metadata.
    """
    from repo_gen.precision import PrecisionVariant

    out: dict[str, PrecisionVariant] = {}
    for p, key in keys.items():
        entry = cache.get(key)
        if entry is None:
            continue
        t0 = time.perf_counter()
        same = bool(entry.meta["same_file"])
        serve = work / f"cached_{p}_serve.onnx"
        trt = serve if same else work / f"cached_{p}_trt.onnx"
        files = {"serve.onnx": serve} if same else {"serve.onnx": serve, "trt.onnx": trt}
        if not cache.restore(entry, files):
            continue
        out[p] = PrecisionVariant.from_record(entry.meta["variant"], serve, trt)
        cache.note_hit(f"{p} variant", f"reuse {p} (stage cache)", entry, time.perf_counter() - t0)
    return out


def store_variants(cache: StageCache, keys: dict[str, str | None], variants: list[PrecisionVariant],
                   seconds: float) -> None:
    """Store freshly made variants under `keys` (from `variant_keys`); `seconds` (the precision
    stage's wall time) is split evenly among them."""
    for v in variants:
        same = Path(v.serve_onnx) == Path(v.trt_onnx)
        files = {"serve.onnx": Path(v.serve_onnx)} if same else {"serve.onnx": Path(v.serve_onnx), "trt.onnx": Path(v.trt_onnx)}
        meta = {"stage": f"precision:{v.precision}", "same_file": same, "variant": v.record()}
        cache.put(keys[v.precision], files, meta, seconds / max(1, len(variants)))
