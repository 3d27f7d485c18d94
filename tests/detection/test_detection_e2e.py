"""The trained detection fixture built, judged and served for real (tritonserver from the pytriton wheel).

One build per module: FP32/FP16/INT8 (mAP per precision), python + onnxruntime + TensorRT-plan models,
the pipeline. The fixture checkpoint is cached (XDG cache); the first run on a machine trains it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "ssdlite_mobilevit_xxs"
# The fixture's accuracy bar: FP32 mAP@.5 (0-100) on the build's 32 held-out scenes, judged through the
# served graph with score threshold 0.05 (mAP ranks detections; the default 0.25 cuts the precision-recall
# curve of a fixture whose best score per scene is about 0.24 at the median). Measured for the v3 fixture: 44.9 on these 32
# scenes, 35.8 on 100 (21.1 / 18.6 at threshold 0.25; benchmarks/RESULTS.md "Detection"). The bar is under
# half of that, so a fluctuation of the recipe or of 32 scenes does not fail it; an untrained or broken
# detector (below 2) does.
FIXTURE_MAP50_BAR = 20.0
SCORE_THRESHOLD = 0.05


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from repo_gen.detection.build import DetectionBuildConfig, build_detection
    from repo_gen.detection.fixture import ensure_detector_checkpoint
    from repo_gen.detection.nms_graph import NmsOptions

    repo = tmp_path_factory.mktemp("det") / "model_repository"
    cfg = DetectionBuildConfig(model=MODEL, output=repo, weights=ensure_detector_checkpoint(), max_batch=4,
                               precisions=("fp32", "fp16", "int8"), eval_count=32, calib_count=32,
                               map_tolerance=3.0, nms=NmsOptions(score_threshold=SCORE_THRESHOLD))
    return repo, build_detection(cfg)


def test_manifest_records_map_per_precision_and_nms_options(built):
    repo, report = built
    man = json.loads((repo / "repo-gen.json").read_text())
    rec = man["builds"][MODEL]
    assert rec["nms"] == {"max_detections": 100, "score_threshold": SCORE_THRESHOLD, "iou_threshold": 0.45}
    ec = rec["export_check"]
    assert ec["passed"] and ec["batches"] == [1, 3, 4]
    assert ec["low_threshold"]["passed"] and ec["low_threshold"]["matched"] >= 50
    assert ec["low_threshold"]["min_iou"] >= 0.99
    assert 0.0 <= rec["fp32_map"]["map50"] <= 100.0 and 0.0 <= rec["fp32_map"]["map"] <= rec["fp32_map"]["map50"]
    assert rec["fp32_map"]["map50"] >= FIXTURE_MAP50_BAR, rec["fp32_map"]
    by_prec = {v["precision"]: v for v in rec["variants"]}
    assert set(by_prec) == {"fp16", "int8"}
    for v in by_prec.values():
        assert abs(v["map_drop"] - (rec["fp32_map"]["map"] - v["map"]["map"])) < 0.02
        assert v["status"] in ("ready", "inaccurate") and isinstance(v["kept_nodes"], list)
    table = (repo / f"{MODEL}_precision.md").read_text()
    assert "| fp16 |" in table and "| int8 |" in table and "kept higher precision" in table
    trt = man["models"][f"{MODEL}_trt_fp32"]
    assert trt["status"] == "not_built" and "--stronglyTyped" in trt["extra"]["trtexec"]


def test_configs_parse_and_load_in_the_real_triton_core(built, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from repo_gen.errors import MissingDependency
    from repo_gen.tools import find_tritonserver
    from repo_gen.triton.server import TritonServer, free_ports

    repo, _ = built
    for cfg in repo.glob("*/config.pbtxt"):
        text_format.Parse(cfg.read_text(), model_config_pb2.ModelConfig())
    try:
        inst = find_tritonserver()
    except MissingDependency as e:
        pytest.skip(str(e))
    served = tmp_path / "repo"
    shutil.copytree(repo, served)
    (served / f"{MODEL}_trt_fp16" / "1").mkdir()  # Triton looks for the backend only with a version dir
    with TritonServer(served, ports=free_ports(), models=[], exit_on_error=False, install=inst) as srv:
        for name, backend in ((f"{MODEL}_trt_fp16", "tensorrt"), (f"{MODEL}_onnx_int8", "onnxruntime")):
            if backend in inst.backends:
                continue
            code, body = srv.load_model(name)
            assert code == 400 and f"unable to find backend library for backend '{backend}'" in body, body


@pytest.fixture(scope="module")
def server(built, tmp_path_factory):
    from repo_gen.errors import MissingDependency
    from repo_gen.tools import find_tritonserver
    from repo_gen.triton.server import TritonServer, free_ports

    try:
        find_tritonserver()
    except MissingDependency as e:
        pytest.skip(str(e))
    repo, _ = built
    served = tmp_path_factory.mktemp("served") / "repo"
    shutil.copytree(repo, served)
    srv = TritonServer(served, ports=free_ports(), exit_on_error=False,
                       models=[f"{MODEL}_py_fp32", f"{MODEL}_det_preprocess", f"{MODEL}_det_postprocess",
                               f"{MODEL}_pipeline"])
    srv.start(timeout_s=300)
    yield srv
    srv.stop()


def test_served_batch_matches_in_process_onnx_runtime(built, server):
    import tritonclient.grpc as grpcclient

    from repo_gen.detection.fixture import make_scenes
    from repo_gen.detection.letterbox import letterbox
    from repo_gen.onnx.runner import make_session

    repo, report = built
    size = report.weights["image_size"]
    x = np.stack([letterbox(s.image, size)[0] for s in make_scenes("test", 3, seed=5)])
    ref = make_session(repo / f"{MODEL}_py_fp32" / "1" / "model.onnx", threads=1).run(None, {"input": x})
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    names = ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
    res = client.infer(f"{MODEL}_py_fp32", [inp], outputs=[grpcclient.InferRequestedOutput(n) for n in names])
    for name, want in zip(names, ref, strict=True):
        np.testing.assert_allclose(res.as_numpy(name), want, rtol=1e-5, atol=1e-4, err_msg=name)
    assert res.as_numpy("num_detections").shape == (3, 1) and res.as_numpy("detection_boxes").shape == (3, 100, 4)


def test_detect_cli_boxes_in_original_pixels_and_a_bad_image_fails_alone(built, server, tmp_path):
    from PIL import Image

    from repo_gen.detection.fixture import write_scenes
    from repo_gen.detection.letterbox import letterbox, to_image_boxes
    from repo_gen.onnx.runner import make_session

    repo, report = built
    scenes = write_scenes(tmp_path / "scenes", "test", 2, seed=11)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    good = [scenes / "test_0000.png", scenes / "test_0001.png"]
    out = tmp_path / "annotated.png"
    r = subprocess.run([sys.executable, "-m", "repo_gen.cli", "detect", str(good[0]), str(bad), str(good[1]),
                        "--url", server.grpc_url, "--threshold", "0.3", "--json", "--out", str(out)],
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                       timeout=300)
    assert r.returncode == 2, r.stderr
    assert "broken.png" in r.stderr and "1 of 3 image(s) failed" in r.stderr
    results = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(x["path"]).name for x in results] == ["test_0000.png", "test_0001.png"]
    sess = make_session(repo / f"{MODEL}_py_fp32" / "1" / "model.onnx", threads=1)
    size = report.weights["image_size"]
    truth = json.loads((scenes / "annotations.json").read_text())["annotations"]
    for res, path in zip(results, good, strict=True):
        img = Image.open(path).convert("RGB")
        x, lb = letterbox(img, size)
        n, b, s, _ = sess.run(None, {"input": x[None]})
        keep = s[0, : n[0, 0]] >= 0.3
        want = to_image_boxes(b[0, : n[0, 0]][keep], lb)
        got = np.array([[d["x1"], d["y1"], d["x2"], d["y2"]] for d in res["detections"]]).reshape(-1, 4)
        np.testing.assert_allclose(got, want, atol=1e-3)  # exact mapping back to the original image
        assert (got[:, 2] <= img.width + 1e-3).all() and (got[:, 3] <= img.height + 1e-3).all()
        drawn = Image.open(tmp_path / f"annotated_{path.stem}.png")
        assert drawn.size == img.size
    assert truth  # the scenes have ground truth; the fixture's accuracy is asserted on the manifest
