"""`repo-gen classify` through the installed entry point, against the live pipeline server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.conftest import PIPELINE

pytestmark = pytest.mark.server
ENTRY_POINT = Path(sys.executable).parent / "repo-gen"


@pytest.fixture()
def classify():
    if not ENTRY_POINT.is_file():
        pytest.skip(f"{ENTRY_POINT} not installed (pip install -e .)")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ENTRY_POINT), "classify", *args], capture_output=True, text=True, timeout=120)  # noqa: S603

    return run


@pytest.fixture()
def image_files(tmp_path, photo_files):
    paths = []
    for name, data in photo_files[:3]:
        p = tmp_path / name
        p.write_bytes(data)
        paths.append(p)
    return paths


def _expected_top(pipeline_repo, data: bytes, k: int) -> list[str]:
    from repo_gen.data.preprocess import preprocess_bytes
    from repo_gen.onnx.runner import make_session

    logits = make_session(pipeline_repo / f"{PIPELINE.removesuffix('_pipeline')}_py_fp32" / "1" / "model.onnx").run(
        None, {"input": preprocess_bytes(data, 256)[None]})[0][0]
    labels = (pipeline_repo / PIPELINE / "labels.txt").read_text().splitlines()
    return [labels[i] for i in np.argsort(-logits, kind="stable")[:k]]


def test_classify_json_labels_equal_in_process(classify, pipeline_server, pipeline_repo, image_files):
    r = classify(*map(str, image_files), "--url", pipeline_server.grpc_url, "--top-k", "3", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(p) for p in image_files]
    for row, path in zip(rows, image_files, strict=True):
        assert row["error"] is None
        assert [t["label"] for t in row["top_k"]] == _expected_top(pipeline_repo, path.read_bytes(), 3)


def test_classify_http_text_and_per_file_errors(classify, pipeline_server, image_files, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(image_files[0].read_bytes()[:200])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    missing = tmp_path / "missing.jpg"
    r = classify(str(image_files[0]), str(corrupt), str(text), str(missing), str(image_files[1]),
                 "--protocol", "http", "--url", f"http://{pipeline_server.http_url}", "--model", PIPELINE,
                 "--top-k", "2")
    assert r.returncode == 2
    assert str(image_files[0]) in r.stdout and str(image_files[1]) in r.stdout
    assert r.stdout.count("  1. ") == 2 and r.stdout.count("  2. ") == 2
    err = " ".join(r.stderr.split())  # rich may wrap long lines
    for path, why in ((corrupt, "corrupt"), (text, "not an image"), (missing, "No such file")):
        assert f"{path}:" in err and why in err, err
    assert "3 of 5 image(s) could not be classified" in err


def test_classify_unreachable_server_is_a_clear_error(classify, image_files):
    from repo_gen.triton.server import free_port

    r = classify(str(image_files[0]), "--url", f"127.0.0.1:{free_port()}")
    assert r.returncode == 2
    assert "no Triton server answers" in r.stderr and "repo-gen serve" in " ".join(r.stderr.split())
