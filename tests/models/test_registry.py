"""The model registry agrees with timm (names, parameter counts, data config)."""

import pytest

from repo_gen.models import get_model_spec, list_models


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "mobilevitv2_050"])
def test_spec_matches_timm(name):
    import timm
    from timm.data import resolve_data_config

    spec = get_model_spec(name)
    model = timm.create_model(spec.timm_name)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params_m - spec.params_m) / spec.params_m < 0.02
    dc = resolve_data_config({}, model=model)
    assert dc["interpolation"] == spec.data.interpolation
    assert dc["crop_pct"] == pytest.approx(spec.data.crop_pct)
    assert tuple(dc["mean"]) == spec.data.mean and tuple(dc["std"]) == spec.data.std
    assert tuple(dc["input_size"]) == spec.data.input_size


def test_every_mobilevit_registered():
    names = set(list_models())
    assert {"mobilevit_xxs", "mobilevit_xs", "mobilevit_s"} <= names
    assert any(n.startswith("mobilevitv2_") for n in names)
