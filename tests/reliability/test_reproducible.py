"""Reproducible and incremental builds: same inputs -> byte-identical files; the stage cache reuses
what did not change, says so in the report and the manifest, and never corrupts or fails a build."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from repo_gen.cache import (
    StageCache,
    fp32_stage_inputs,
    restore_variants,
    store_variants,
    variant_keys,
)
from tests.reliability.helpers import BUILD_ARGS, cli, diff_trees, tree_state

MANIFEST = "repo-gen.json"


def _files(root: Path) -> dict:
    return {k: v for k, v in tree_state(root).items() if k != MANIFEST}


def _manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text())


@pytest.mark.slow
def test_fresh_build_in_another_process_is_byte_identical(fp32_repo, tmp_path):
    """`--no-cache` in a new process (own cache dir) vs the session's build: every model file identical."""
    out = tmp_path / "repo"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = cli(["build", *BUILD_ARGS, "--no-cache", "--output", str(out)], env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    diff = diff_trees(_files(fp32_repo), _files(out))
    assert not diff, f"files differ between two builds of the same inputs: {diff}"
    a, b = _manifest(fp32_repo), _manifest(out)
    assert a["models"] == b["models"]
    rec_a, rec_b = next(iter(a["builds"].values())), next(iter(b["builds"].values()))
    assert rec_a["export_check"] == rec_b["export_check"]
    assert rec_a["weights"] == rec_b["weights"]
    assert rec_b["cache"] == {"enabled": False, "reused": [], "saved_s": 0}
    assert not (tmp_path / "cache" / "repo-gen" / "stages").exists(), "--no-cache stored stage artifacts"


def test_rebuild_reuses_cached_stage_and_reports_it(fp32_repo, tmp_path):
    out = tmp_path / "repo"
    for _attempt in range(2):  # a first miss is possible when repo-gen's sources changed since the session build
        r = cli(["build", *BUILD_ARGS, "--json", "--output", str(out)], timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.loads(r.stdout)
        if any("from the stage cache" in n for n in report["notes"]):
            break
    reuse = [n for n in report["notes"] if "from the stage cache" in n]
    assert reuse and "saved about" in reuse[0], report["notes"]
    assert "reuse fp32 (stage cache)" in report["timings_s"] and "export onnx" not in report["timings_s"]
    rec = next(iter(_manifest(out)["builds"].values()))
    assert rec["cache"]["enabled"] is True and rec["cache"]["reused"][0]["stage"].startswith("load + export")
    assert rec["cache"]["saved_s"] > 0
    assert any("UNTRAINED" in n for n in rec["notes"])  # the stage's own notes come back with it
    assert not diff_trees(_files(fp32_repo), _files(out)), "a cached build differs from a fresh one"
    assert _manifest(fp32_repo)["models"] == _manifest(out)["models"]


# -- the cache itself (no build) --------------------------------------------------------------------

def _cfg(**kw):
    from repo_gen.config import BuildConfig

    base = dict(model="mobilevit_xxs", output=Path("/tmp/x"), max_batch=8, precisions=("fp32",), runtimes=("py",),
                pipeline=False)
    base.update(kw)
    return BuildConfig(**base)


def test_cache_key_follows_every_input(tmp_path):
    import torch

    cache = StageCache(root=tmp_path / "stages")
    w1, w2 = tmp_path / "a.pth", tmp_path / "b.pth"
    # The config reads the class count off the checkpoint's head, so each file carries one (mobilevit_xxs: 320 wide).
    torch.save({"head.fc.weight": torch.zeros(10, 320), "head.fc.bias": torch.zeros(10)}, w1)
    torch.save({"head.fc.weight": torch.ones(10, 320), "head.fc.bias": torch.zeros(10)}, w2)
    base = cache.key("fp32", fp32_stage_inputs(_cfg(), [1, 3, 8]))
    assert base == cache.key("fp32", fp32_stage_inputs(_cfg(), [1, 3, 8]))  # deterministic
    variants = {
        "seed": fp32_stage_inputs(_cfg(seed=1), [1, 3, 8]),
        "model": fp32_stage_inputs(_cfg(model="mobilevit_xs"), [1, 3, 8]),
        "image_size": fp32_stage_inputs(_cfg(image_size=320), [1, 3, 8]),
        "opset": fp32_stage_inputs(_cfg(opset=18), [1, 3, 8]),
        "check_batches": fp32_stage_inputs(_cfg(), [1, 3, 4]),
        "weights_a": fp32_stage_inputs(_cfg(weights=w1), [1, 3, 8]),
        "weights_b": fp32_stage_inputs(_cfg(weights=w2), [1, 3, 8]),
    }
    keys = {name: cache.key("fp32", inp) for name, inp in variants.items()}
    assert len(set(keys.values()) | {base}) == len(keys) + 1, keys
    # Output location, runtimes and the like do not change the FP32 graph: same key.
    assert cache.key("fp32", fp32_stage_inputs(_cfg(output=tmp_path / "elsewhere", runtimes=("onnx",)), [1, 3, 8])) == base
    # Pretrained weights cannot be pinned by content: never cached.
    assert cache.key("fp32", fp32_stage_inputs(_cfg(pretrained=True), [1, 3, 8])) is None
    assert StageCache(enabled=False).key("fp32", fp32_stage_inputs(_cfg(), [1, 3, 8])) is None


def test_cache_key_follows_tool_versions_and_sources(monkeypatch, tmp_path):
    import repo_gen.cache as c

    cache = StageCache(root=tmp_path)
    inputs = fp32_stage_inputs(_cfg(), [1, 3, 8])
    base = cache.key("fp32", inputs)
    real = c.tool_versions()
    monkeypatch.setattr(c, "tool_versions", lambda: {**real, "onnxruntime": "0.0.0"})
    assert cache.key("fp32", inputs) != base
    monkeypatch.undo()
    monkeypatch.setattr(c, "source_digest", lambda parts: "edited")
    assert cache.key("fp32", inputs) != base


def test_corrupt_entry_is_discarded_and_rebuilt(tmp_path):
    cache = StageCache(root=tmp_path / "stages")
    art = tmp_path / "fp32.onnx"
    art.write_bytes(b"model bytes" * 1000)
    cache.put("k" * 64, {"fp32.onnx": art}, {"report": {}}, seconds=5.0)
    entry = cache.get("k" * 64)
    assert entry is not None and entry.seconds == 5.0
    stored = tmp_path / "stages" / ("k" * 64) / "fp32.onnx"
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF
    stored.write_bytes(bytes(data))
    dst = tmp_path / "restored.onnx"
    assert cache.restore(entry, {"fp32.onnx": dst}) is False
    assert not dst.exists(), "a corrupt artifact was left at the destination"
    assert cache.get("k" * 64) is None and not (tmp_path / "stages" / ("k" * 64)).exists()
    (tmp_path / "stages" / "bad").mkdir()
    (tmp_path / "stages" / "bad" / "meta.json").write_text("{truncated")
    assert cache.get("bad") is None  # unreadable metadata: a miss, never an error


def test_unwritable_cache_never_fails_a_build(tmp_path, caplog):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    cache = StageCache(root=blocker / "stages")
    art = tmp_path / "a.onnx"
    art.write_bytes(b"x")
    cache.put("k" * 64, {"a.onnx": art}, {}, 1.0)  # must not raise
    assert cache.get("k" * 64) is None


def test_destination_errors_are_not_hidden_as_misses(tmp_path):
    """A full disk at the build's staging directory must surface (the build reports it), not turn into a rebuild."""
    cache = StageCache(root=tmp_path / "stages")
    art = tmp_path / "a.onnx"
    art.write_bytes(b"x" * 100)
    cache.put("k" * 64, {"a.onnx": art}, {}, 1.0)
    entry = cache.get("k" * 64)
    with pytest.raises(OSError):
        entry.restore("a.onnx", tmp_path / "missing_dir" / "a.onnx")


def test_entries_are_atomic_and_pruned(tmp_path):
    cache = StageCache(root=tmp_path / "stages")
    art = tmp_path / "a.onnx"
    art.write_bytes(b"x")
    for i in range(5):
        cache.put(f"{i:064d}", {"a.onnx": art}, {}, 1.0)
        os.utime(tmp_path / "stages" / f"{i:064d}" / "meta.json", (1000 + i, 1000 + i))
    assert not [p for p in (tmp_path / "stages").iterdir() if p.name.startswith(".tmp-")]
    cache.get(f"{0:064d}")  # a hit makes entry 0 the most recently used
    cache.prune(max_entries=2)
    left = sorted(p.name for p in (tmp_path / "stages").iterdir())
    assert left == sorted([f"{0:064d}", f"{4:064d}"]), left


def test_precision_variants_round_trip(tmp_path):
    from repo_gen.precision import PrecisionVariant
    from repo_gen.results import Fidelity, Tolerance

    cache = StageCache(root=tmp_path / "stages")
    cfg = _cfg(precisions=("fp32", "fp16", "int8"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "fp16.onnx").write_bytes(b"fp16 graph")
    (work / "int8_serve.onnx").write_bytes(b"int8 serve graph")
    (work / "int8_trt.onnx").write_bytes(b"int8 trt graph")
    tol = Tolerance("mean cosine similarity >= tolerance", 0.99)
    made = [PrecisionVariant("fp16", work / "fp16.onnx", work / "fp16.onnx", "fp32", Fidelity({"rel_l2": 1e-4}), "ready"),
            PrecisionVariant("int8", work / "int8_serve.onnx", work / "int8_trt.onnx", "fp32",
                             Fidelity({"cosine": 0.999}, tol, "int8.onnx"), "inaccurate", "cosine 0.98 < 0.99",
                             {"calibration": "max"}, trt_fidelity=Fidelity({"cosine": 0.98}, tol, "int8_trt.onnx"))]
    store_variants(cache, variant_keys(cache, "f" * 64, cfg, ["fp16", "int8"]), made, seconds=10.0)
    other = tmp_path / "work2"
    other.mkdir()
    got = restore_variants(cache, variant_keys(cache, "f" * 64, cfg, ["fp16", "int8"]), other)
    assert set(got) == {"fp16", "int8"}
    for v in made:
        g = got[v.precision]
        assert g.record() == v.record() and g.trt_fidelity == v.trt_fidelity
        assert g.serve_onnx.read_bytes() == v.serve_onnx.read_bytes()
        assert g.trt_onnx.read_bytes() == v.trt_onnx.read_bytes()
    assert len(cache.notes) == 2 and all("saved about 5.0 s" in n for n in cache.notes)
    assert set(cache.restore_timings) == {"reuse fp16 (stage cache)", "reuse int8 (stage cache)"}
    # Different options for a precision: its own key, so a miss.
    keys = variant_keys(cache, "f" * 64, _cfg(precisions=("int8",), calib_count=8), ["int8"])
    assert restore_variants(cache, keys, other) == {}
    shutil.rmtree(other)
