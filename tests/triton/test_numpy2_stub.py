"""Our python-backend models served with numpy 2 in the stub's environment (the GPU machine's python has
numpy 2). With tritonserver 2.51's stub (nvidia-pytriton 0.7.0), an output built as
pb_utils.Tensor(name, numpy_array) then reaches the client with its shape and 0 bytes of data; the
generated models hand outputs over through DLPack instead (templates/_numpy_io.py.j2).

The stub runs the python whose bin comes first on PATH (repo_gen.tools): here a throwaway venv holding
the numpy 2 wheel scripts/setup.sh downloads, with this venv's packages behind it."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from repo_gen.compare import max_relative_error
from tests.conftest import TEST_MODEL, _need_tritonserver

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[2]
NUMPY2_WHEELS = ROOT / ".venv" / "opt" / "numpy2"
PY_MODEL = f"{TEST_MODEL}_py_fp32"
CANARY = "numpy_version"
CANARY_CODE = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        major = np.array([[int(np.__version__.split(".")[0])]] * len(requests), dtype=np.int32)
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor.from_dlpack("major", major[i : i + 1].copy())])
                for i in range(len(requests))]
"""
# The way outputs were built before: under numpy 2 it reaches clients with 0 bytes of data.
NUMPY_OUTPUT = "numpy_output"
NUMPY_OUTPUT_CODE = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("major", np.ones((1, 1), np.int32))])
                for _ in requests]
"""
CANARY_CONFIG = f"""name: "{CANARY}"
backend: "python"
max_batch_size: 1
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "major" data_type: TYPE_INT32 dims: [ 1 ] }} ]
"""


@pytest.fixture()
def numpy2_path(tmp_path) -> str:
    wheels = sorted(NUMPY2_WHEELS.glob("numpy-2*.whl"))
    if not wheels:
        pytest.skip(f"no numpy 2 wheel in {NUMPY2_WHEELS}: run scripts/setup.sh")
    env = tmp_path / "numpy2-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    (site,) = (env / "lib").glob("python3*/site-packages")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheels[-1])], check=True)
    (site / "repo_gen_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # behind numpy 2
    return f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"


def test_python_models_answer_with_numpy2_in_the_stub(fp32_repo, tmp_path, numpy2_path):
    install = _need_tritonserver()
    import tritonclient.grpc as grpcclient

    from repo_gen.onnx.runner import make_session
    from repo_gen.perf.answer_check import check_answers
    from repo_gen.triton.server import TritonServer, free_ports

    served = tmp_path / "model_repository"
    served.mkdir()
    shutil.copytree(fp32_repo / PY_MODEL, served / PY_MODEL)
    (served / CANARY / "1").mkdir(parents=True)
    (served / CANARY / "1" / "model.py").write_text(CANARY_CODE)
    (served / CANARY / "config.pbtxt").write_text(CANARY_CONFIG)
    (served / NUMPY_OUTPUT / "1").mkdir(parents=True)
    (served / NUMPY_OUTPUT / "1" / "model.py").write_text(NUMPY_OUTPUT_CODE)
    (served / NUMPY_OUTPUT / "config.pbtxt").write_text(CANARY_CONFIG.replace(CANARY, NUMPY_OUTPUT))
    install = dataclasses.replace(install, env={**install.env, "PATH": numpy2_path})
    x = np.random.default_rng(0).random((3, 3, 256, 256), dtype=np.float32)
    want = make_session(served / PY_MODEL / "1" / "model.onnx").run(None, {"input": x})[0]
    server = TritonServer(served, ports=free_ports(), models=[PY_MODEL, CANARY, NUMPY_OUTPUT], exit_on_error=True, install=install)
    server.start(timeout_s=180)
    with server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        probe = grpcclient.InferInput("x", [1, 1], "FP32")
        probe.set_data_from_numpy(np.zeros((1, 1), np.float32))
        assert client.infer(CANARY, [probe]).as_numpy("major")[0, 0] == 2  # the stub really runs numpy 2
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer(PY_MODEL, [inp]).as_numpy("logits")  # raised "cannot reshape array of size 0" before
        client.close()
        # What `repo-gen bench` asks before measuring a model (perf_analyzer never reads answers).
        for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
            assert check_answers(url, protocol, PY_MODEL) is None
            wrong = check_answers(url, protocol, NUMPY_OUTPUT)
            assert wrong is not None and "without its data" in wrong, wrong
    assert got.shape == want.shape and max_relative_error(want, got) <= 1e-4
