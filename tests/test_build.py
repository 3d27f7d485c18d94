"""The FP32 build: ONNX contract, export check figures, repository layout, manifest, safety."""

import json

import numpy as np
import onnx
import pytest

from repo_gen.build import build
from repo_gen.config import BuildConfig
from repo_gen.errors import UserError
from repo_gen.triton.render import parse_config
from tests.conftest import TEST_MAX_BATCH, TEST_MODEL
from tests.reliability.helpers import tree_state


def test_onnx_contract(fp32_repo):
    model = onnx.load(str(fp32_repo / f"{TEST_MODEL}_onnx_fp32" / "1" / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    in_dims = model.graph.input[0].type.tensor_type.shape.dim
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    assert in_dims[0].dim_param and not in_dims[0].dim_value  # dynamic batch
    assert [d.dim_value for d in in_dims[1:]] == [3, 256, 256]
    assert out_dims[1].dim_value == 1000
    assert model.opset_import[0].version >= 17
    assert not [n for n in model.graph.node if n.op_type == "Identity"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_manifest_and_export_check(fp32_repo):
    m = json.loads((fp32_repo / "repo-gen.json").read_text())
    names = set(m["models"])
    assert names == {f"{TEST_MODEL}_onnx_fp32", f"{TEST_MODEL}_py_fp32"}
    rec = m["builds"][TEST_MODEL]
    ec = rec["export_check"]
    assert set(ec["raw"]) == {"1", "3", str(TEST_MAX_BATCH)} == set(ec["cleaned"])
    assert max(ec["raw"].values()) <= 1e-4 and max(ec["cleaned"].values()) <= 1e-4
    assert rec["weights"]["source"] == "random" and rec["weights"]["trained"] is False
    assert any("UNTRAINED" in n for n in rec["notes"])
    for entry in m["models"].values():
        for f in entry["files"]:
            assert (fp32_repo / f).is_file(), f
        assert entry["max_batch_size"] == TEST_MAX_BATCH
        assert entry["status"] == "ready"


def test_configs_parse_and_agree(fp32_repo):
    for d in ("onnx", "py"):
        name = f"{TEST_MODEL}_{d}_fp32"
        cfg = parse_config((fp32_repo / name / "config.pbtxt").read_text())
        assert cfg.name == name and cfg.max_batch_size == TEST_MAX_BATCH
        assert cfg.HasField("dynamic_batching") and cfg.instance_group and cfg.model_warmup
        assert cfg.version_policy.latest.num_versions == 1
        assert cfg.output[0].label_filename == "labels.txt"
        labels = (fp32_repo / name / "labels.txt").read_text().splitlines()
        assert len(labels) == 1000 and labels[0] == "tench"


def test_rebuild_is_idempotent_and_byte_identical(repo_copy):
    def model_files():
        return {str(p.relative_to(repo_copy)): (p.stat().st_mode, p.read_bytes())
                for p in repo_copy.rglob("*") if p.is_file() and p.name != "repo-gen.json"
                # __pycache__: left by a python-backend stub that served the shared repository earlier
                and "__pycache__" not in p.parts}

    before = model_files()
    build(BuildConfig(model=TEST_MODEL, output=repo_copy, max_batch=TEST_MAX_BATCH, precisions=("fp32",),
                      runtimes=("onnx", "py"), pipeline=False))
    after = model_files()
    assert before.keys() == after.keys()
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"rebuild changed {changed}"
    assert not list(repo_copy.parent.glob(".repo-gen-staging-*"))


def test_failed_build_leaves_repository_untouched(repo_copy, tmp_path):
    foreign = repo_copy / "my_own_model"
    foreign.mkdir()
    (foreign / "config.pbtxt").write_text('name: "my_own_model"\nbackend: "python"\n')
    before = tree_state(repo_copy)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="--weights"):
        build(BuildConfig(model=TEST_MODEL, output=repo_copy, weights=bad, max_batch=TEST_MAX_BATCH,
                          precisions=("fp32",), runtimes=("py",), pipeline=False))
    assert tree_state(repo_copy) == before
    assert not list(repo_copy.parent.glob(".repo-gen-staging-*"))


def test_refuses_to_overwrite_foreign_model(tmp_path):
    repo = tmp_path / "r"
    (repo / f"{TEST_MODEL}_py_fp32").mkdir(parents=True)
    (repo / f"{TEST_MODEL}_py_fp32" / "config.pbtxt").write_text("x")
    before = tree_state(repo)
    with pytest.raises(UserError, match="not created by repo-gen"):
        build(BuildConfig(model=TEST_MODEL, output=repo, max_batch=2, precisions=("fp32",), runtimes=("py",), pipeline=False))
    assert tree_state(repo) == before


def test_mismatched_weights_named(tmp_path):
    import timm
    import torch

    other = timm.create_model("mobilevit_xs")
    path = tmp_path / "xs.pth"
    torch.save({"state_dict": other.state_dict()}, path)
    with pytest.raises(UserError) as e:
        build(BuildConfig(model=TEST_MODEL, output=tmp_path / "r", weights=path, max_batch=2,
                          precisions=("fp32",), runtimes=("py",), pipeline=False))
    assert "wrong shape" in str(e.value) and "--weights" in str(e.value)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # loads a real MobileViT
def test_checkpoint_under_ema_key_loads(tmp_path):
    import timm
    import torch

    from repo_gen.models import get_model_spec
    from repo_gen.torch.loader import load_model

    m = timm.create_model(TEST_MODEL)
    path = tmp_path / "ema.pth"
    torch.save({"ema": m.state_dict(), "epoch": 3}, path)
    loaded = load_model(get_model_spec(TEST_MODEL), weights=path)
    assert loaded.trained and loaded.source == "checkpoint" and len(loaded.checkpoint_sha256) == 64
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.module(x).numpy(), m.eval()(x).numpy(), rtol=1e-5, atol=1e-5)
