"""Bad input to a detector build: one line naming the input and the fix, exit 2, repository unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repo_gen.detection.model import build_detector, save_detector
from repo_gen.detection.specs import get_detector_spec

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repo_gen.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}, timeout=600)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    import timm

    d = tmp_path_factory.mktemp("ckpt")
    det = build_detector(get_detector_spec("ssdlite_mobilevit_xxs"), 10, 128)
    save_detector(det, d / "det.pth")
    torch.save(timm.create_model("mobilevit_xxs", num_classes=10).state_dict(), d / "cls.pth")
    (d / "labels3.txt").write_text("a\nb\nc\n")
    return {"det": d / "det.pth", "cls": d / "cls.pth", "labels3": d / "labels3.txt"}


@pytest.mark.parametrize("flags, message", [
    (["--image-size", "300"], "--image-size 300: a MobileViT-SSDLite input must be a multiple of 64"),
    (["--max-detections", "0"], "--max-detections 0: K must be at least 1"),
    (["--score-threshold", "1.5"], "--score-threshold 1.5: a threshold must lie in [0, 1]"),
    (["--iou-threshold", "-0.2"], "--iou-threshold -0.2: a threshold must lie in [0, 1]"),
])
def test_bad_options(tmp_path, flags, message):
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep.txt").write_text("untouched")
    r = _cli("build", "--model", "ssdlite_mobilevit_xxs", "--output", str(out), *flags, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_checkpoint_mismatches(tmp_path, checkpoints):
    out = tmp_path / "repo"
    cases = [
        (["--model", "ssdlite_mobilevit_xxs", "--weights", str(checkpoints["cls"])],
         "this is a classifier checkpoint"),
        (["--model", "mobilevit_xxs", "--weights", str(checkpoints["det"])], "this is a detector checkpoint"),
        (["--model", "ssdlite_mobilevit_xxs", "--weights", str(checkpoints["det"]), "--labels",
          str(checkpoints["labels3"])], "--labels: 3 classes, but the checkpoint"),
        (["--model", "ssdlite_mobilevit_xs", "--weights", str(checkpoints["det"])], "keys do not match"),
    ]
    for flags, message in cases:
        r = _cli("build", "--output", str(out), "--precisions", "fp32", *flags, cwd=tmp_path)
        assert r.returncode == 2, (flags, r.stderr)
        assert message in r.stderr, (flags, r.stderr)
        assert not out.exists(), flags  # nothing written
