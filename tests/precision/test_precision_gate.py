"""The INT8 gate: cosine similarity and top-1 agreement, and the report naming which one decided."""

from __future__ import annotations

import pytest

from repo_gen.config import BuildConfig
from repo_gen.errors import UserError
from repo_gen.precision.gate import int8_verdict


def _fid(cos: float, top1: float) -> dict:
    return {"cosine_mean": cos, "top1_agreement": top1}


def test_high_cosine_with_flipped_top1_is_rejected_by_top1():
    """The case seen on a random-weight mobilevit_xxs: cosine 0.995 but 60 of 64 images keep their top-1."""
    v = int8_verdict(_fid(0.995, 60 / 64), cosine_min=0.99, top1_tolerance=0.02)
    assert not v.ok and v.decided_by == "top-1 agreement"
    assert v.failures() == ["top-1 agreement 0.9375 < 0.9800"]
    assert v.to_dict()["decided_by"] == "top-1 agreement"


@pytest.mark.parametrize(("cos", "top1", "ok", "decided"), [
    (0.999, 1.0, True, "all criteria met"),
    (0.999, 63 / 64, True, "all criteria met"),  # 1.6% changed, within 2%
    (0.95, 1.0, False, "cosine"),
    (0.95, 0.5, False, "cosine and top-1 agreement"),
])
def test_verdicts(cos, top1, ok, decided):
    v = int8_verdict(_fid(cos, top1), cosine_min=0.99, top1_tolerance=0.02)
    assert v.ok is ok and v.decided_by == decided


def test_zero_tolerance_needs_every_image():
    assert int8_verdict(_fid(1.0, 1.0), 0.99, 0.0).ok
    assert not int8_verdict(_fid(1.0, 127 / 128), 0.99, 0.0).ok


def test_tolerance_is_a_validated_build_option(tmp_path):
    assert BuildConfig(model="mobilevit_xxs", output=tmp_path / "r", int8_top1_tolerance=0.05).int8_top1_tolerance == 0.05
    with pytest.raises(UserError, match="--int8-top1-tolerance"):
        BuildConfig(model="mobilevit_xxs", output=tmp_path / "r", int8_top1_tolerance=1.5)


@pytest.mark.slow
def test_int8_stage_reports_the_deciding_criterion(xxs64, tmp_path, monkeypatch):
    """The real INT8 stage on mobilevit_xxs (random weights, 64x64) with the cosine bar near 0, so only
    top-1 agreement can decide: the status follows the measured agreement and the report says so."""
    from repo_gen.precision import stage

    monkeypatch.setattr(stage, "SEARCH_MAX_STEPS", 1)
    cfg = BuildConfig(model="mobilevit_xxs", image_size=64, precisions=("fp32", "int8"), calib_count=16, eval_count=32,
                      int8_tolerance=1e-9, int8_top1_tolerance=0.0)
    (v,) = stage.make_precision_variants(cfg, xxs64, tmp_path, {}, ["int8"])
    verdicts = v.report["verdict"]
    assert set(verdicts) == {"TensorRT form", "CPU form"}
    fid = {"CPU form": v.fidelity.metrics, "TensorRT form": v.trt_fidelity.metrics}
    for form, verdict in verdicts.items():
        all_agree = fid[form]["top1_agreement"] == 1.0
        assert verdict["ok"] is all_agree
        assert verdict["decided_by"] == ("all criteria met" if all_agree else "top-1 agreement")
    assert (v.status == "ready") is all(x["ok"] for x in verdicts.values())
    if v.status != "ready":
        assert "top-1 agreement" in v.status_reason and "cosine" not in v.status_reason
    assert "top-1 agreement" in v.fidelity.tolerance.metric and "--int8-top1-tolerance 0" in v.fidelity.tolerance.metric
    assert "CPU form: " in v.report["decided_by"] and "TensorRT form: " in v.report["decided_by"]
