"""BuildConfig validation: every bad value is a UserError naming the flag."""

import pytest

from repo_gen.config import BuildConfig, validate_model_name
from repo_gen.errors import UserError


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"model": "resnet9000"}, "--model"),
        ({"max_batch": 0}, "--max-batch"),
        ({"max_batch": -3}, "--max-batch"),
        ({"image_size": 250}, "--image-size"),
        ({"image_size": 224}, "--image-size"),  # MobileViT needs a multiple of 64
        ({"precisions": "fp32,fp8"}, "--precisions"),
        ({"runtimes": "tflite"}, "--runtimes"),
        ({"opt_batch": 65, "max_batch": 64}, "--opt-batch"),
        ({"opset": 13}, "--opset"),
        ({"version": 0}, "--version"),
        ({"calib_method": "mse"}, "--calib-method"),
    ],
)
def test_bad_values_name_the_flag(kwargs, flag, tmp_path):
    with pytest.raises(UserError) as e:
        BuildConfig(output=tmp_path / "r", **kwargs)
    assert flag in str(e.value)
    assert "\n" not in str(e.value)


def test_output_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="--output .* is a file"):
        BuildConfig(output=f)


def test_missing_weights(tmp_path):
    with pytest.raises(UserError, match="--weights .*no such file"):
        BuildConfig(output=tmp_path / "r", weights=tmp_path / "nope.pth")


def test_defaults_resolve_once(tmp_path):
    cfg = BuildConfig(output=tmp_path / "r", max_batch=8)
    assert cfg.image_size == 256 and cfg.opt_batch == 8
    assert cfg.data.input_size == (3, 256, 256)


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 200, "a..b"])
def test_model_names_cannot_escape(name):
    with pytest.raises(UserError):
        validate_model_name(name)
