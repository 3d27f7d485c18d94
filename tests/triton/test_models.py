"""Model directory writers: what each config promises before the first request."""

from __future__ import annotations

from pathlib import Path

import pytest

from repo_gen.config import BuildConfig
from repo_gen.precision import PrecisionVariant
from repo_gen.results import WriteRequest
from repo_gen.triton.models import write_python_onnx_model
from repo_gen.triton.render import parse_config


@pytest.mark.parametrize("max_batch", [1, 8, 64])
def test_python_backend_warms_up_at_the_batch_sizes_the_batcher_forms(tmp_path: Path, max_batch: int):
    onnx_file = tmp_path / "src.onnx"
    onnx_file.write_bytes(b"copied as is")  # the writer copies the file; its content is not read here
    model_dir = tmp_path / "m_py_fp32"
    model_dir.mkdir()
    cfg = BuildConfig(model="mobilevit_xxs", output=tmp_path / "repo", max_batch=max_batch)
    req = WriteRequest.make(cfg, "m_py_fp32", model_dir, PrecisionVariant("fp32", onnx_file, onnx_file),
                            [str(i) for i in range(10)])
    write_python_onnx_model(req)
    cfg_pb = parse_config((model_dir / "config.pbtxt").read_text())
    assert cfg_pb.HasField("dynamic_batching") and not cfg_pb.dynamic_batching.preferred_batch_size
    # No preferred sizes: the batcher forms anything from 1 to max_batch_size; both ends are warmed.
    assert sorted(w.batch_size for w in cfg_pb.model_warmup) == sorted({1, max_batch})


def test_requirements_file_is_one_pip_can_read_with_the_build_pins():
    """The repository's requirements.txt: every non-comment line a valid requirement, onnxruntime and
    pillow pinned to this environment's versions (what the fidelity figures were measured with)."""
    from packaging.requirements import Requirement

    from repo_gen.triton.python_env import pinned_versions, requirements_text

    text = requirements_text(["m_py_fp32", "m_preprocess"])
    reqs = {r.name: r for r in (Requirement(line) for line in text.splitlines() if line and not line.startswith("#"))}
    assert set(reqs) == {"onnxruntime", "pillow", "numpy"}
    for name, version in pinned_versions().items():
        assert str(reqs[name].specifier) == f"=={version}"
    assert "#   m_preprocess" in text
