"""perf_analyzer input data: real photos preprocessed exactly as the manifest says, as base64."""

import base64
import json

import numpy as np
import pytest

from repo_gen.errors import UserError
from repo_gen.perf.input_data import real_tensors, write_input_data
from repo_gen.triton.repository import read_manifest
from tests.conftest import TEST_MODEL

PY_MODEL = f"{TEST_MODEL}_py_fp32"


def test_real_input_data_is_the_preprocessed_photos(fp32_repo, tmp_path):
    data = read_manifest(fp32_repo)["models"][PY_MODEL]["data"]
    arg = write_input_data(tmp_path / "in.json", fp32_repo / PY_MODEL, data, "real", count=4)
    doc = json.loads((tmp_path / "in.json").read_text())
    assert arg == str(tmp_path / "in.json") and len(doc["data"]) == 4
    got = np.stack([np.frombuffer(base64.b64decode(e["input"]["b64"]), "<f4").reshape(3, 256, 256) for e in doc["data"]])
    want = real_tensors(data, 4)
    np.testing.assert_array_equal(got, want)
    assert 0.0 <= got.min() and got.max() <= 1.0 and got.std() > 0.05  # mean 0 / std 1: pixels in [0, 1], not noise-flat


def test_random_and_unknown_preprocessing(fp32_repo, tmp_path):
    assert write_input_data(tmp_path / "r.json", fp32_repo / PY_MODEL, None, "random") == "random"
    assert write_input_data(tmp_path / "u.json", fp32_repo / PY_MODEL, None, "real") == "random"  # warns, falls back
    with pytest.raises(UserError, match="--input-data"):
        write_input_data(tmp_path / "x.json", fp32_repo / PY_MODEL, None, "zeros")
