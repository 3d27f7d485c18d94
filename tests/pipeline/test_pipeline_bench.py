"""`repo-gen bench` measures the model a user calls: `<model>_pipeline` fed real encoded photos,
reported beside its classifier (real tritonserver, real perf_analyzer)."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import struct

import pytest
from PIL import Image

from repo_gen.cli import main
from repo_gen.perf.input_data import write_input_data
from tests.pipeline.conftest import CLASSIFIER, PIPELINE, PREPROCESS

# Count windows with a loose stability bound: these tests check what was measured, not the machine.
LOOSE = ["--measurement-mode", "count_windows", "--measurement-request-count", "8", "--stability-percentage", "500",
         "--max-trials", "4"]


@pytest.mark.parametrize("model", [PIPELINE, PREPROCESS])
def test_image_bytes_inputs_get_encoded_photos_as_triton_bytes(pipeline_repo, tmp_path, model):
    for kind in ("real", "random"):  # random bytes are no image: photos either way
        arg = write_input_data(tmp_path / f"{kind}.json", pipeline_repo / model, None, kind, count=5)
        entries = json.loads((tmp_path / f"{kind}.json").read_text())["data"]
        assert arg == str(tmp_path / f"{kind}.json") and len(entries) == 5
        for e in entries:
            raw = base64.b64decode(e["IMAGE"]["b64"])
            (n,) = struct.unpack("<I", raw[:4])
            assert n == len(raw) - 4 and e["IMAGE"]["shape"] == [1]  # one serialized BYTES element
            img = Image.open(io.BytesIO(raw[4:]))
            assert img.format == "JPEG" and min(img.size) >= 256


def test_user_images_are_sent_as_they_are(pipeline_repo, tmp_path):
    photos = tmp_path / "mine"
    photos.mkdir()
    files = []
    for i, color in enumerate(("red", "blue")):
        buf = io.BytesIO()
        Image.new("RGB", (300, 200), color).save(buf, "PNG")
        (photos / f"{i}.png").write_bytes(buf.getvalue())
        files.append(buf.getvalue())
    write_input_data(tmp_path / "in.json", pipeline_repo / PIPELINE, None, "real", count=3, images_dir=photos)
    got = [base64.b64decode(e["IMAGE"]["b64"])[4:] for e in json.loads((tmp_path / "in.json").read_text())["data"]]
    assert got == [files[0], files[1], files[0]]


@pytest.mark.server
def test_bench_measures_the_pipeline_beside_its_classifier(pipeline_repo, perf_analyzer, tmp_path):
    repo = tmp_path / "model_repository"
    shutil.copytree(pipeline_repo, repo)
    out = tmp_path / "bench"
    code = main(["bench", "--model-repository", str(repo), "--models", PIPELINE, "--concurrency", "1,2",
                 "--batch-sizes", "1,2", "--output", str(out), *LOOSE])
    assert code == 0, (out / "report.md").read_text() if (out / "report.md").exists() else ""
    rows = list(csv.DictReader((out / "results.csv").open()))
    measured = {(r["model"], r["batch_size"], r["concurrency"]) for r in rows}
    assert measured == {(m, b, c) for m in (PIPELINE, CLASSIFIER) for b in ("1", "2") for c in ("1", "2")}
    for r in rows:
        assert float(r["throughput"]) > 0 and float(r["p99_ms"]) >= float(r["p50_ms"]) > 0, r
    pipe = json.loads((out / "input_data" / f"{PIPELINE}.json").read_text())["data"]
    assert base64.b64decode(pipe[0]["IMAGE"]["b64"])[4:6] == b"\xff\xd8"  # JPEG bytes, not random
    report = (out / "report.md").read_text()
    assert "## Pipeline beside its classifier" in report
    assert f"| {PIPELINE} | {CLASSIFIER} | 1 |" in report and f"| {PIPELINE} | {CLASSIFIER} | 2 |" in report
    summary = json.loads((out / "results.json").read_text())
    assert summary["pipelines"] == {PIPELINE: CLASSIFIER} and summary["complete"]
