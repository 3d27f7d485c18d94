"""make_precision_variants end to end: the build's contract, the report, unreachable tolerances."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from repo_gen.config import BuildConfig
from repo_gen.errors import UserError
from repo_gen.precision.stage import make_precision_variants


def _cfg(**kw) -> BuildConfig:
    base = dict(model="mobilevit_xxs", image_size=64, precisions=("fp32", "fp16", "int8"), calib_count=16,
                eval_count=16)
    base.update(kw)
    return BuildConfig(**base)


def test_unknown_precision(tmp_path, tiny_path):
    with pytest.raises(UserError, match="unknown precision"):
        make_precision_variants(_cfg(), tiny_path, tmp_path, {}, ["bf16"])


@pytest.mark.slow
def test_variants_contract_and_report(xxs64, tmp_path):
    timings: dict = {}
    vs = make_precision_variants(_cfg(), xxs64, tmp_path, timings, ["fp16", "int8"])
    assert [v.precision for v in vs] == ["fp16", "int8"]
    fp16, int8 = vs
    assert fp16.serve_onnx == fp16.trt_onnx and fp16.serve_onnx.is_file()
    assert int8.serve_onnx != int8.trt_onnx and int8.trt_onnx.is_file() and int8.serve_onnx.is_file()
    for v in vs:
        onnx.checker.check_model(onnx.load(str(v.serve_onnx)))
        assert v.status in ("ready", "inaccurate")
        assert v.fidelity.metrics["cosine_mean"] > 0.99 and v.trt_fidelity is not None
        assert v.fidelity.tolerance is v.trt_fidelity.tolerance is not None
        json.dumps(v.report)  # the manifest and the stage cache store it as JSON
        assert "| fp32 |" in v.report["table_md"] and "| int8 |" in v.report["table_md"]
        assert "NOT representative" in v.report["table_md"]
        assert v.report["search"]["steps"][0]["step"] == 0
    assert int8.report["trt_rule_violations"] == []
    assert int8.report["calibration"]["images"] == 16 and int8.report["calibration"]["seconds"] > 0
    assert {"fp16 fallback search", "int8 calibration", "int8 sensitivity search"} <= set(timings)


@pytest.mark.slow
def test_unreachable_tolerance_is_marked_not_fatal(xxs64, tmp_path, monkeypatch):
    from repo_gen.precision import stage

    monkeypatch.setattr(stage, "SEARCH_MAX_STEPS", 1)  # one greedy round is enough to show the marking
    cfg = _cfg(fp16_tolerance=1e-9, int8_tolerance=0.999999999)
    vs = make_precision_variants(cfg, xxs64, tmp_path, {}, ["fp16", "int8"])
    for v in vs:
        assert v.status == "inaccurate" and v.status_reason
        assert v.report["search"]["stop_reason"] != "tolerance met"


def _digits_checkpoint() -> Path:
    """The trained digits model: from the cache, or trained now (a minute or two on 2 free cores)."""
    from repo_gen.fixtures.digits import ensure_digits_checkpoint

    return ensure_digits_checkpoint()


@pytest.mark.slow
def test_digits_fixture_real_accuracy(tmp_path):
    """The trained fixture: FP16 keeps top-1, INT8 loses at most 1 point, on held-out digits."""
    from repo_gen.fixtures.digits import write_digit_folders
    from repo_gen.models import get_model_spec
    from repo_gen.onnx.export import export_onnx
    from repo_gen.onnx.passes import cleanup_graph
    from repo_gen.torch.loader import load_model

    ckpt = _digits_checkpoint()
    loaded = load_model(get_model_spec("mobilevit_xxs"), ckpt)
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(cleanup_graph(export_onnx(loaded.module, 64)), str(fp32))
    ev = write_digit_folders(tmp_path / "eval", "test", count=200)
    cal = write_digit_folders(tmp_path / "calib", "train", count=128)
    cfg = _cfg(weights=ckpt, calib_dir=cal, eval_dir=ev, calib_count=128, eval_count=200)
    vs = make_precision_variants(cfg, fp32, tmp_path / "work", {}, ["fp16", "int8"])
    top1_fp32 = vs[0].report["fp32_row"]["accuracy"]["top1"]
    assert top1_fp32 > 90
    fp16, int8 = vs
    assert fp16.status == "ready" and int8.status == "ready"
    assert fp16.fidelity.metrics["accuracy"]["top1"] == top1_fp32
    assert int8.fidelity.metrics["accuracy"]["top1"] >= top1_fp32 - 1.0
    assert int8.trt_fidelity.metrics["accuracy"]["top1"] >= top1_fp32 - 1.0
    assert "10 classes (real accuracy)" in fp16.report["table_md"]
