"""`repo-gen build --pipeline-model`: the ensemble's classifier chosen by the user, and the ensemble's
README saying how to point it at another variant."""

from __future__ import annotations

import json

import pytest

from repo_gen.config import BuildConfig
from repo_gen.errors import UserError
from repo_gen.triton.render import parse_config
from tests.conftest import TEST_MAX_BATCH, TEST_MODEL


def test_pipeline_model_picks_the_classifier(tmp_path):
    from repo_gen.build import build

    out = tmp_path / "model_repository"
    build(BuildConfig(model=TEST_MODEL, output=out, max_batch=TEST_MAX_BATCH, precisions=("fp32",),
                      runtimes=("onnx", "py"), pipeline=True, pipeline_model=f"{TEST_MODEL}_onnx_fp32"))
    ens = parse_config((out / f"{TEST_MODEL}_pipeline" / "config.pbtxt").read_text())
    # The preference order alone would have chosen py_fp32.
    assert [s.model_name for s in ens.ensemble_scheduling.step][-1] == f"{TEST_MODEL}_onnx_fp32"
    entry = json.loads((out / "repo-gen.json").read_text())["models"][f"{TEST_MODEL}_pipeline"]
    assert entry["extra"]["classifier"] == f"{TEST_MODEL}_onnx_fp32"
    assert "--pipeline-model" in entry["extra"]["classifier_choice"]
    readme = (out / f"{TEST_MODEL}_pipeline" / "README.md").read_text()
    assert f"{TEST_MODEL}_pipeline/README.md" in entry["files"]
    assert "--pipeline-model" in readme and f'model_name: "{TEST_MODEL}_onnx_fp32"' in readme
    assert f"in this repository that is {TEST_MODEL}_py_fp32" in readme
    assert str(tmp_path) not in readme  # movable: no build-machine paths


@pytest.mark.parametrize("kwargs,needle", [
    (dict(pipeline_model="trt_fp16"), "not a classifier this build writes"),
    (dict(pipeline_model="py_fp32", pipeline=False), "--no-pipeline"),
    (dict(pipeline_model="../x"), "not a classifier this build writes"),
])
def test_pipeline_model_bad_input_before_any_work(tmp_path, kwargs, needle):
    with pytest.raises(UserError, match=needle):
        BuildConfig(model=TEST_MODEL, output=tmp_path / "r", precisions=("fp32",), runtimes=("onnx", "py"), **kwargs)
    assert not (tmp_path / "r").exists()


def test_pipeline_model_cli_flag(tmp_path, capsys):
    from repo_gen.cli import main

    rc = main(["build", "--model", TEST_MODEL, "--output", str(tmp_path / "r"), "--runtimes", "py",
               "--precisions", "fp32", "--pipeline-model", "onnx_fp32"])
    assert rc == 2 and "--pipeline-model onnx_fp32" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
