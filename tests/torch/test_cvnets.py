"""Apple ml-cvnets MobileViT checkpoints load into timm with equal outputs (fixtures: tests/fixtures/cvnets)."""

import argparse
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from repo_gen.errors import UserError  # noqa: E402
from repo_gen.models import get_model_spec  # noqa: E402
from repo_gen.torch.cvnets import cvnets_architecture, cvnets_to_timm  # noqa: E402
from repo_gen.torch.loader import load_model  # noqa: E402

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "cvnets"


def test_apple_outputs_reproduced_by_timm():
    """Apple's MobileViT-XXS (random init, made by make_fixtures.py) and timm on the renamed weights agree."""
    loaded = load_model(get_model_spec("mobilevit_xxs"), FIX / "mobilevit_xxs_cvnets.pth")
    ref = torch.load(FIX / "mobilevit_xxs_outputs.pt", weights_only=True)
    with torch.inference_mode():
        got = loaded.module(ref["input"])
    assert loaded.source_format == "cvnets"
    assert got.shape == ref["logits"].shape == (2, 10)
    assert (got - ref["logits"]).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s"])
def test_every_size_maps_key_for_key(name):
    """Every key of Apple's XXS / XS / S state dicts maps to a timm key of the same shape, and none is left over."""
    shapes = json.loads((FIX / "state_dict_shapes.json").read_text())[name]
    state = {k: torch.empty(v) for k, v in shapes.items()}
    assert cvnets_architecture(state) == name
    mapped = cvnets_to_timm(state, "x.pth", name)
    expected = {k: tuple(v.shape) for k, v in timm.create_model(name, num_classes=10).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected


def test_training_checkpoint_with_namespace_loads(tmp_path):
    """cvnets training checkpoints carry their argparse options: allowed by the safe loader."""
    state = torch.load(FIX / "mobilevit_xxs_cvnets.pth", weights_only=True)
    path = tmp_path / "training_checkpoint_last.pt"
    torch.save({"model_state_dict": state, "opts": argparse.Namespace(lr=0.002), "epoch": 3}, path)
    assert load_model(get_model_spec("mobilevit_xxs"), path).source_format == "cvnets"


def test_other_size_or_architecture_is_refused(tmp_path):
    state = torch.load(FIX / "mobilevit_xxs_cvnets.pth", weights_only=True)
    with pytest.raises(UserError, match="pass --model mobilevit_xxs"):
        load_model(get_model_spec("mobilevit_s"), _save(tmp_path / "a.pth", state))
    # A cvnets MobileViTv2-like checkpoint: cvnets key layout, no v1 transformer.
    v2 = {k.replace("pre_norm_mha", "pre_norm_attn"): v for k, v in state.items()}
    with pytest.raises(UserError) as e:
        load_model(get_model_spec("mobilevit_xxs"), _save(tmp_path / "b.pth", v2))
    assert "cvnets" in str(e.value) and "\n" not in str(e.value)


def _save(path, obj):
    torch.save(obj, path)
    return path
