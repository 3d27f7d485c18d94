"""A generated repository can be moved: no text file it holds names a path of the machine (or the
folder) it was built in, and after a move a real tritonserver serves it from the new place."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.conftest import TEST_MAX_BATCH, TEST_MODEL, _need_tritonserver


@pytest.mark.slow
@pytest.mark.server
def test_moved_repository_names_no_build_path_and_serves(tmp_path):
    from repo_gen.build import build
    from repo_gen.config import BuildConfig
    from repo_gen.triton.server import TritonServer, free_ports

    built_in = tmp_path / "build machine" / "model_repository"
    built_in.parent.mkdir()
    build(BuildConfig(model=TEST_MODEL, output=built_in, max_batch=TEST_MAX_BATCH, precisions=("fp32",),
                      runtimes=("py", "trt"), pipeline=True))
    moved = tmp_path / "elsewhere" / "repo"
    moved.parent.mkdir()
    shutil.move(str(built_in), moved)

    texts = [p for p in moved.rglob("*") if p.is_file() and b"\0" not in p.read_bytes()[:4096]]
    assert any(p.name == "README.md" for p in texts) and any(p.name == "repo-gen.json" for p in texts)
    for p in texts:
        text = p.read_text(errors="replace")
        assert str(built_in.parent) not in text and str(tmp_path) not in text, p

    _need_tritonserver()
    name = f"{TEST_MODEL}_py_fp32"
    server = TritonServer(moved, ports=free_ports(), exit_on_error=False)
    try:
        server.start(timeout_s=180)
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(server.http_url)
        x = np.random.default_rng(0).random((2, 3, 256, 256), dtype=np.float32)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        assert client.infer(name, [inp]).as_numpy("logits").shape == (2, 1000)
    finally:
        server.stop()
