"""The pipeline's pieces without a server: classifier choice, generated configs, preprocess.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from repo_gen.data.preprocess import MAX_PIXELS, ImageError, decode_image, preprocess, preprocess_bytes
from repo_gen.pipeline import CLASSIFIER_PREFERENCE, choose_classifier, ensemble_model_names
from repo_gen.pipeline.client import parse_classification, read_images
from repo_gen.triton.render import parse_config
from repo_gen.triton.repository import ModelEntry
from tests.conftest import TEST_MAX_BATCH, TEST_MODEL
from tests.pipeline.conftest import CLASSIFIER, PIPELINE, PREPROCESS, encode, huge_png


def _entry(runtime: str, precision: str, status: str = "ready", model: str = "m") -> ModelEntry:
    backend = {"onnx": "onnxruntime", "py": "python", "trt": "tensorrt"}[runtime]
    return ModelEntry(f"{model}_{runtime}_{precision}", model, runtime, backend, precision, [1], [], status)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("onnx", "fp32"), ("py", "fp32"), ("trt", "fp16")], "m_trt_fp16"),
        ([("onnx", "fp32"), ("py", "fp32"), ("trt", "fp16", "not_built")], "m_py_fp32"),
        ([("onnx", "fp32"), ("py", "fp16"), ("py", "fp32", "inaccurate")], "m_py_fp16"),
        ([("onnx", "fp32"), ("trt", "fp32", "not_built")], "m_onnx_fp32"),
        ([("trt", "int8"), ("trt", "fp32"), ("trt", "fp16", "inaccurate")], "m_trt_int8"),
    ],
)
def test_choose_classifier_follows_preference(rows, expected):
    entries = {e.name: e for e in (_entry(*r) for r in rows)}
    entries["other_py_fp32"] = _entry("py", "fp32", model="other")
    chosen, why = choose_classifier(entries, "m")
    assert chosen is not None and chosen.name == expected, why
    assert "preference" in why


def test_choose_classifier_none_ready_says_why():
    entries = {e.name: e for e in [_entry("trt", "fp16", "not_built"), _entry("py", "fp32", "inaccurate")]}
    chosen, why = choose_classifier(entries, "m")
    assert chosen is None
    assert "m_trt_fp16 (not_built)" in why and "m_py_fp32 (inaccurate)" in why


def test_preference_table_covers_every_variant():
    from repo_gen.config import PRECISIONS, RUNTIMES

    assert sorted(CLASSIFIER_PREFERENCE) == sorted((r, p) for r in RUNTIMES for p in PRECISIONS)
    assert CLASSIFIER_PREFERENCE[0][0] == "trt"


def test_names_are_planned_by_build():
    from repo_gen.build import planned_models
    from repo_gen.config import BuildConfig

    assert ensemble_model_names("mobilevit_s") == ["mobilevit_s_preprocess", "mobilevit_s_pipeline"]
    cfg = BuildConfig(model="mobilevit_xxs", runtimes=("py",), pipeline=True)
    assert planned_models(cfg)[-2:] == ensemble_model_names("mobilevit_xxs")


def test_generated_repository(pipeline_repo):
    """Configs parse with Triton's schema, the ensemble wires preprocess -> chosen classifier,
    and preprocess.py is a byte-for-byte copy of the one implementation."""
    import repo_gen.data.preprocess as pp

    ens = parse_config((pipeline_repo / PIPELINE / "config.pbtxt").read_text())
    assert ens.platform == "ensemble" and ens.max_batch_size == TEST_MAX_BATCH
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [PREPROCESS, CLASSIFIER]
    assert ens.input[0].name == "IMAGE" and list(ens.input[0].dims) == [1]
    assert ens.output[0].label_filename == "labels.txt"
    labels = (pipeline_repo / PIPELINE / "labels.txt").read_text().splitlines()
    assert labels == (pipeline_repo / CLASSIFIER / "labels.txt").read_text().splitlines()
    pre = parse_config((pipeline_repo / PREPROCESS / "config.pbtxt").read_text())
    assert pre.backend == "python" and pre.HasField("dynamic_batching")
    assert list(pre.output[0].dims) == [3, 256, 256]
    params = {k: v.string_value for k, v in pre.parameters.items()}
    assert params["interpolation"] == "bicubic" and float(params["crop_pct"]) == 0.9
    copied = pipeline_repo / PREPROCESS / "1" / "preprocess.py"
    assert copied.read_bytes() == open(pp.__file__, "rb").read()
    manifest = json.loads((pipeline_repo / "repo-gen.json").read_text())["models"]
    assert manifest[PIPELINE]["extra"]["steps"] == [PREPROCESS, CLASSIFIER]
    assert manifest[PIPELINE]["backend"] == "ensemble"
    assert (pipeline_repo / PIPELINE / "1").is_dir()  # ensembles need a version directory


def test_preprocess_equals_timm_eval_transform():
    """The one implementation equals timm's eval transform on real photos (lossless PNG round trip)."""
    pytest.importorskip("timm")
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from repo_gen.data.images import skimage_photos
    from repo_gen.models import get_model_spec

    data = get_model_spec(TEST_MODEL).data
    tf = create_transform(**resolve_data_config({}, pretrained_cfg={
        "input_size": data.input_size, "interpolation": data.interpolation, "crop_pct": data.crop_pct,
        "crop_mode": data.crop_mode, "mean": data.mean, "std": data.std}))
    for name, img in skimage_photos()[:4]:
        ours = preprocess_bytes(encode(img, "PNG"), data.input_size[1], data.interpolation, data.crop_pct, data.mean, data.std)
        ref = tf(Image.open(__import__("io").BytesIO(encode(img, "PNG"))).convert("RGB")).numpy()
        np.testing.assert_array_equal(ours, ref, err_msg=name)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_huge_images_bounded_in_process(huge_jpeg):
    png = huge_png(10_000, 10_000)
    with pytest.raises(ImageError, match="pixel limit"):
        decode_image(png)
    img = decode_image(huge_jpeg)  # decoded at 1/8 scale: 1250 x 1250, never 100 MP
    assert img.size == (1250, 1250) and img.size[0] * img.size[1] <= MAX_PIXELS
    assert preprocess(img, 256).shape == (3, 256, 256)


@pytest.mark.parametrize(("data", "match"), [(b"", "empty"), (b"%PDF-1.7 hello", "not an image"),
                                              (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "cannot decode|not an image")])
def test_bad_bytes_raise_image_error(data, match):
    with pytest.raises(ImageError, match=match):
        decode_image(data)


def test_parse_classification_keeps_colons_in_labels():
    p = parse_classification(b"12.5:7:label: with colon")
    assert (p.score, p.index, p.label) == (12.5, 7, "label: with colon")


def test_read_images_reports_each_unreadable_file(tmp_path):
    good = tmp_path / "a.jpg"
    good.write_bytes(b"\xff\xd8 bytes")
    (tmp_path / "empty.png").write_bytes(b"")
    ok, bad = read_images([good, tmp_path / "missing.jpg", tmp_path / "empty.png", tmp_path])
    assert [n for n, _ in ok] == [str(good)]
    reasons = {r.path: r.error for r in bad}
    assert "No such file" in reasons[str(tmp_path / "missing.jpg")]
    assert "empty" in reasons[str(tmp_path / "empty.png")]
    assert "directory" in reasons[str(tmp_path)]
