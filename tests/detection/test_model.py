"""The export body (DetectorCore + reference NMS) reproduces torchvision's SSD postprocessing exactly,
and checkpoints round-trip through the safe loader."""

from __future__ import annotations

import pytest
import torch

from repo_gen.detection.model import (
    DetectorCore,
    build_detector,
    load_detector,
    reference_detections,
    save_detector,
)
from repo_gen.detection.specs import get_detector_spec, list_detectors


def test_registry():
    assert list_detectors() == ["ssdlite_mobilevit_s", "ssdlite_mobilevit_xs", "ssdlite_mobilevit_xxs"]


def test_core_matches_torchvision_ssd_postprocess():
    torch.manual_seed(0)
    m = build_detector(get_detector_spec("ssdlite_mobilevit_xxs"), 4, 128, score_thresh=0.2, iou_thresh=0.5,
                       max_det=30).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        want = m(list(x))
        boxes, scores = DetectorCore(m)(x)
    got = reference_detections(boxes, scores, 0.2, 0.5, 30)
    for w, g in zip(want, got, strict=True):
        assert len(w["scores"]) == len(g["scores"])
        torch.testing.assert_close(g["boxes"], w["boxes"], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(g["scores"], w["scores"])
        assert torch.equal(g["classes"] + 1, w["labels"])  # torchvision counts background as class 0


def test_checkpoint_roundtrip_keeps_size_and_classes(tmp_path):
    m = build_detector(get_detector_spec("ssdlite_mobilevit_xxs"), 3, 192)
    save_detector(m, tmp_path / "d.pth")
    back = load_detector(get_detector_spec("ssdlite_mobilevit_xxs"), tmp_path / "d.pth")
    assert back.repo_gen_info.num_classes == 3 and back.repo_gen_info.image_size == 192
    for k, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


@pytest.mark.parametrize("size", [100, 320 + 32])
def test_bad_size(size):
    from repo_gen.errors import UserError

    with pytest.raises(UserError, match="multiple of 64"):
        build_detector(get_detector_spec("ssdlite_mobilevit_xxs"), 3, size)


def test_checkpoint_records_its_layout_and_the_loader_rebuilds_it(tmp_path):
    # The fixture's layout (stride-8 map, smaller default boxes) differs from the registry's; a checkpoint
    # carries it, so loading by the registry name rebuilds the same anchors and the same outputs.
    from repo_gen.detection.fixture import FIXTURE_LAYOUT

    spec = get_detector_spec("ssdlite_mobilevit_xxs")
    torch.manual_seed(0)
    m = build_detector(spec.with_layout(FIXTURE_LAYOUT), 10, 128).eval()
    save_detector(m, tmp_path / "d.pth")
    back = load_detector(spec, tmp_path / "d.pth")
    assert back.repo_gen_info.layout == m.repo_gen_info.layout != spec.layout()
    assert back.repo_gen_info.layout["out_indices"] == [2, 3, 4]
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        want, got = DetectorCore(m)(x), DetectorCore(back)(x)
    assert want[0].shape[1] == 1360  # 16x16 + 8x8 + 4x4 + 2x2 maps, 4 boxes each
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


def test_bad_layout_in_a_checkpoint_is_named(tmp_path):
    from repo_gen.errors import UserError

    m = build_detector(get_detector_spec("ssdlite_mobilevit_xxs"), 3, 128)
    info = {**m.repo_gen_info.to_dict(), "layout": {**m.repo_gen_info.layout, "out_indices": [7]}}
    torch.save({"state_dict": m.state_dict(), "detector_info": info}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=r"--weights .*bad.pth: not a valid ssdlite_mobilevit_xxs layout"):
        load_detector(get_detector_spec("ssdlite_mobilevit_xxs"), tmp_path / "bad.pth")
