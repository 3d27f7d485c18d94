"""Preprocessing precedence (flags > checkpoint pretrained_cfg > timm) and its range checks."""

import pytest

from repo_gen.errors import UserError
from repo_gen.models import get_model_spec
from repo_gen.models.data_config import DataOverrides, parse_triple, resolve_data_config

BASE = get_model_spec("mobilevit_xxs").data


def test_timm_default():
    assert resolve_data_config(BASE) == BASE


def test_checkpoint_then_flags():
    ckpt = {"input_size": [3, 128, 128], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "crop_pct": 1.0,
            "interpolation": "bilinear"}
    d = resolve_data_config(BASE, ckpt)
    assert d.input_size == (3, 128, 128) and d.mean == (0.5, 0.5, 0.5) and d.crop_pct == 1.0
    d = resolve_data_config(BASE, ckpt, DataOverrides(std=(1.0, 2.0, 3.0), crop_pct=0.875, image_size=64))
    assert d.std == (1.0, 2.0, 3.0) and d.crop_pct == 0.875 and d.input_size == (3, 64, 64)
    assert d.interpolation == "bilinear"


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        (DataOverrides(std=(0.0, 1.0, 1.0)), "--std"),
        (DataOverrides(crop_pct=0.0), "--crop-pct"),
        (DataOverrides(crop_pct=1.5), "--crop-pct"),
        (DataOverrides(crop_pct=-0.2), "--crop-pct"),
    ],
)
def test_out_of_range_flags(overrides, flag):
    with pytest.raises(UserError) as e:
        resolve_data_config(BASE, None, overrides)
    assert str(e.value).startswith(flag) and "\n" not in str(e.value)


def test_bad_checkpoint_value_names_the_checkpoint():
    with pytest.raises(UserError, match="pretrained_cfg std"):
        resolve_data_config(BASE, {"std": [0, 0, 0]})


@pytest.mark.parametrize("value", ["1,2", "a,b,c", "1,2,inf"])
def test_parse_triple_rejects(value):
    with pytest.raises(UserError, match="--mean"):
        parse_triple(value, "--mean")


def test_parse_triple_one_for_all():
    assert parse_triple("0.5", "--std") == (0.5, 0.5, 0.5)
