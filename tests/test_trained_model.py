"""The trained digits model end to end: its own labels and data config, served accuracy per precision,
recorded FP16/INT8 fallback decisions, and Triton's image-client conventions over HTTP and gRPC.

The model is trained once (about a minute or two on 2 free cores) and cached in the project's cache
folder (`repo_gen.fixtures.digits.default_checkpoint`), so later runs only build and serve.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import _need_tritonserver

pytest.importorskip("torch")
pytest.importorskip("sklearn")

MODEL = "mobilevit_xxs"
PRECISIONS = ("fp32", "fp16", "int8")
CLASSIFIERS = [f"{MODEL}_py_{p}" for p in PRECISIONS]


@pytest.fixture(scope="module")
def digits_build(tmp_path_factory):
    from repo_gen.build import build
    from repo_gen.config import BuildConfig
    from repo_gen.fixtures.digits import ensure_digits_checkpoint, write_digit_folders

    root = tmp_path_factory.mktemp("digits")
    heldout = write_digit_folders(root / "heldout", "test")
    calib = write_digit_folders(root / "calib", "train", count=128)
    cfg = BuildConfig(model=MODEL, weights=ensure_digits_checkpoint(), output=root / "model_repository", max_batch=8,
                      precisions=PRECISIONS, runtimes=("py",), pipeline=True, calib_dir=calib, calib_count=128,
                      eval_dir=heldout, eval_count=540)
    build(cfg)
    return cfg, heldout


@pytest.fixture(scope="module")
def digits_server(digits_build, tmp_path_factory):
    _need_tritonserver()
    from repo_gen.triton.server import TritonServer, free_ports

    served = tmp_path_factory.mktemp("digits_served") / "model_repository"
    shutil.copytree(digits_build[0].output, served)
    server = TritonServer(served, ports=free_ports(), exit_on_error=False)
    server.start(timeout_s=240)
    yield server
    server.stop()


def _manifest(cfg) -> dict:
    return json.loads((cfg.output / "repo-gen.json").read_text())


def test_labels_and_preprocessing_come_from_the_checkpoint(digits_build):
    cfg, _ = digits_build
    names = [str(i) for i in range(10)]
    for model in [*CLASSIFIERS, f"{MODEL}_pipeline"]:
        assert (cfg.output / model / "labels.txt").read_text(encoding="utf-8").splitlines() == names
    build = _manifest(cfg)["builds"][MODEL]
    assert build["labels"]["source"] == "checkpoint" and build["labels"]["names"] == names
    entry = _manifest(cfg)["models"][f"{MODEL}_py_fp32"]
    assert entry["data"]["input_size"] == [3, 64, 64]  # the checkpoint's pretrained_cfg, no flag given
    assert "| 7 |" in (cfg.output / f"FIDELITY_{MODEL}.md").read_text()  # per-class accuracy row


def test_fallback_decisions_recorded(digits_build):
    cfg, _ = digits_build
    variants = {v["precision"]: v for v in _manifest(cfg)["builds"][MODEL]["variants"]}
    for p in ("fp16", "int8"):
        search = variants[p]["report"]["search"]
        assert search["stop_reason"] and isinstance(search["kept_nodes"], list)
        assert variants[p]["report"]["accuracy_tolerance_points"] == cfg.accuracy_tolerance
        assert variants[p]["fidelity"]["metrics"]["accuracy"]["n"] == 540


def test_served_top1_per_precision(digits_build, digits_server):
    """Through a real tritonserver, over the whole held-out split: every precision within the build's tolerance."""
    from repo_gen.fixtures.digits import heldout_accuracy

    cfg, _ = digits_build
    rows = {r.precision: r for r in heldout_accuracy(cfg.output, CLASSIFIERS, digits_server.url("grpc"))}
    fp32 = rows["fp32"].served_top1
    assert fp32 is not None and fp32 > 90.0, rows  # a trained model, not chance (10%)
    for p in PRECISIONS:
        r = rows[p]
        assert r.images == 540
        assert r.served_top1 is not None and r.served_top1 >= fp32 - cfg.accuracy_tolerance, rows
        assert r.served_vs_ort_agreement is not None and r.served_vs_ort_agreement >= 99.0, rows


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_image_client_conventions(digits_build, digits_server, protocol):
    """What Triton's own examples/image_client.py checks before it sends anything (one input, one FP32 vector
    output, a 3-dim image input whose format is NCHW or NHWC), then its request: class_count through the
    classification extension, answers "score:index:label" with the names of labels.txt."""
    import importlib

    from tritonclient.grpc import model_config_pb2 as mc

    from repo_gen.data.preprocess import preprocess_bytes

    client_mod = importlib.import_module(f"tritonclient.{protocol}")
    cfg, heldout = digits_build
    client = client_mod.InferenceServerClient(digits_server.url(protocol))
    model = f"{MODEL}_py_fp32"
    meta = client.get_model_metadata(model)
    config = client.get_model_config(model)
    if protocol == "grpc":
        config = config.config
        inputs, outputs, out_dtype = meta.inputs, meta.outputs, meta.outputs[0].datatype
        fmt = config.input[0].format
        in_shape, max_batch = list(meta.inputs[0].shape), config.max_batch_size
    else:  # HTTP returns JSON: the format is the enum's name
        inputs, outputs, out_dtype = meta["inputs"], meta["outputs"], meta["outputs"][0]["datatype"]
        fmt = mc.ModelInput.Format.Value(config["input"][0]["format"])
        in_shape, max_batch = list(meta["inputs"][0]["shape"]), config["max_batch_size"]
    assert len(inputs) == 1 and len(outputs) == 1 and out_dtype == "FP32"
    assert max_batch > 0 and len(in_shape) == 4
    assert fmt == mc.ModelInput.FORMAT_NCHW

    labels = (cfg.output / model / "labels.txt").read_text(encoding="utf-8").splitlines()
    data = cfg.data
    for truth in ("3", "8"):
        png = sorted((heldout / truth).glob("*.png"))[0].read_bytes()
        x = preprocess_bytes(png, data.input_size[1], data.interpolation, data.crop_pct, data.mean, data.std)[None]
        inp = client_mod.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x.astype(np.float32))
        res = client.infer(model, [inp], outputs=[client_mod.InferRequestedOutput("logits", class_count=3)])
        entries = res.as_numpy("logits").reshape(-1)
        assert len(entries) == 3
        top = entries[0].decode() if isinstance(entries[0], bytes) else str(entries[0])
        _score, index, label = top.split(":", 2)
        assert label == labels[int(index)]
        assert label == truth, entries
    client.close()
