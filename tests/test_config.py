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
        ({"fp16_tolerance": 0}, "--fp16-tolerance"),
        ({"fp16_tolerance": float("nan")}, "--fp16-tolerance"),
        ({"fp16_tolerance": 2.0}, "--fp16-tolerance"),
        ({"int8_tolerance": 1.5}, "--int8-tolerance"),
        ({"int8_tolerance": -0.1}, "--int8-tolerance"),
        ({"export_tolerance": 0.0}, "export_tolerance"),
        ({"eval_count": 0}, "--eval-count"),
        ({"calib_count": 0}, "--calib-count"),
        ({"seed": -1}, "--seed"),
        ({"instance_count": 0}, "--instance-count"),
        ({"max_queue_delay_us": -1}, "--max-queue-delay-us"),
        ({"io_dtype": "bf16"}, "--io-dtype"),
        ({"plugins": "maybe"}, "--plugins"),
        ({"builder_opt_level": 6}, "--builder-opt-level"),
        ({"triton_image": "img; rm -rf /"}, "--triton-image"),
        ({"task": "segmentation"}, "task"),
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


def test_cli_defaults_are_the_configs(tmp_path):
    """Options left out on the command line take BuildConfig's defaults (None means "default")."""
    from repo_gen.cli import make_parser

    args = make_parser().parse_args(["build", "--output", str(tmp_path / "r")])
    assert all(v is None for k, v in vars(args).items()
               if k not in ("output", "command", "func", "verbose", "quiet", "json", "lock_timeout"))
    from repo_gen.commands.build import config_from_args

    cfg = config_from_args(args)
    assert cfg == BuildConfig(output=tmp_path / "r")
    assert cfg.precisions == ("fp32", "fp16", "int8") and cfg.max_batch == 64


def test_cli_options_reach_the_config(tmp_path):
    from repo_gen.cli import make_parser
    from repo_gen.commands.build import config_from_args

    args = make_parser().parse_args(["build", "--output", str(tmp_path / "r"), "--triton-image",
                                     "nvcr.io/nvidia/tritonserver:25.10-py3", "--fp16-tolerance", "1e-2",
                                     "--version", "3", "--no-pipeline", "--no-cache", "--max-batch", "8"])
    cfg = config_from_args(args)
    assert cfg.triton_image == "nvcr.io/nvidia/tritonserver:25.10-py3" and cfg.to_dict()["triton_image"]
    assert (cfg.fp16_tolerance, cfg.version, cfg.pipeline, cfg.use_cache, cfg.max_batch) == (1e-2, 3, False, False, 8)
