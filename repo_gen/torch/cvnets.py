"""Apple ml-cvnets MobileViT (v1) checkpoints -> timm parameter names.

The MobileViT paper's own checkpoints come from Apple's `ml-cvnets` training code, whose module
tree differs from timm's in names only (same layers, same order, same shapes). Renaming the keys
is enough: tests/fixtures/cvnets holds random-init checkpoints made by Apple's own modules with
their outputs on fixed inputs, and timm with the renamed weights reproduces them (max abs
difference ~1e-7, see that folder's README).

Only MobileViT v1 (xx_small / x_small / small) is mapped. Any other cvnets architecture
(MobileViTv2, ResNet, ...) is refused with one line saying so, rather than loaded half-way.
"""

from __future__ import annotations

import re
from typing import Any

from repo_gen.errors import UserError

# Width of the first transformer (layer_3) -> timm model name: the one thing that tells the three
# v1 sizes apart (XXS 64, XS 96, S 144; paper table 4).
_V1_BY_WIDTH = {64: "mobilevit_xxs", 96: "mobilevit_xs", 144: "mobilevit_s"}
_PROBE = "layer_3.1.global_rep.0.pre_norm_mha.0.weight"

# Applied in order to each key; every cvnets v1 key matches exactly one family of rules.
_RULES: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(p), r)
    for p, r in [
        (r"^conv_1\.block\.", "stem.block."),
        (r"^conv_1x1_exp\.block\.", "final_conv.block."),
        (r"^classifier\.fc\.", "head.fc."),
        (r"^layer_(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}."),
        # inverted residual (MobileNetV2) blocks
        (r"\.block\.exp_1x1\.block\.", ".conv1_1x1.block."),
        (r"\.block\.conv_3x3\.block\.", ".conv2_kxk.block."),
        (r"\.block\.red_1x1\.block\.", ".conv3_1x1.block."),
        # MobileViT blocks: local representation, transformer, projection, fusion
        (r"\.local_rep\.conv_3x3\.block\.", ".conv_kxk.block."),
        (r"\.local_rep\.conv_1x1\.block\.conv\.", ".conv_1x1."),
        (r"\.global_rep\.(\d+)\.pre_norm_mha\.0\.", r".transformer.\1.norm1."),
        (r"\.global_rep\.(\d+)\.pre_norm_mha\.1\.qkv_proj\.", r".transformer.\1.attn.qkv."),
        (r"\.global_rep\.(\d+)\.pre_norm_mha\.1\.out_proj\.", r".transformer.\1.attn.proj."),
        (r"\.global_rep\.(\d+)\.pre_norm_ffn\.0\.", r".transformer.\1.norm2."),
        (r"\.global_rep\.(\d+)\.pre_norm_ffn\.1\.", r".transformer.\1.mlp.fc1."),
        (r"\.global_rep\.(\d+)\.pre_norm_ffn\.4\.", r".transformer.\1.mlp.fc2."),
        (r"\.fusion\.block\.", ".conv_fusion.block."),
        # ConvLayer2d(conv, norm) -> timm ConvNormAct(conv, bn)
        (r"\.block\.conv\.", ".conv."),
        (r"\.block\.norm\.", ".bn."),
    ]
]
# The transformer's closing LayerNorm is `global_rep.<L>` (after L encoder blocks) in cvnets and
# `norm` in timm; L differs per stage, so it is resolved per block (see `_final_norms`).
_GLOBAL_REP_NORM = re.compile(r"^(layer_\d+\.\d+)\.global_rep\.(\d+)\.(weight|bias)$")


def is_cvnets_state_dict(state: dict[str, Any]) -> bool:
    """True for any ml-cvnets image classifier (they all start with `conv_1.block.` and `layer_<i>.`)."""
    return any(k.startswith("conv_1.block.") for k in state) and any(k.startswith("layer_") for k in state)


def cvnets_architecture(state: dict[str, Any]) -> str | None:
    """timm name of the MobileViT v1 size this cvnets state dict holds; None for any other architecture."""
    probe = state.get(_PROBE)
    if probe is None or not any(".local_rep.conv_1x1." in k for k in state):
        return None
    return _V1_BY_WIDTH.get(int(probe.shape[0]))


def _final_norms(state: dict[str, Any]) -> set[str]:
    """Keys of each transformer's closing LayerNorm (`global_rep.<L>` with no sub-module)."""
    last: dict[str, int] = {}
    for k in state:
        m = _GLOBAL_REP_NORM.match(k)
        if m:
            last[m.group(1)] = max(last.get(m.group(1), -1), int(m.group(2)))
    return {k for k in state if (m := _GLOBAL_REP_NORM.match(k)) and int(m.group(2)) == last[m.group(1)]}


def cvnets_to_timm(state: dict[str, Any], source: str, model: str) -> dict[str, Any]:
    """Rename a cvnets MobileViT v1 state dict to timm's `model` names.

    Args:
        source: what to name in errors (the --weights path).
        model: the timm name the build asked for; a checkpoint of another size is refused.
    Raises:
        UserError: not MobileViT v1, or a size other than `model`.
    """
    arch = cvnets_architecture(state)
    if arch is None:
        sample = ", ".join(sorted(state)[:3])
        raise UserError(
            f"--weights {source}: an ml-cvnets checkpoint of an architecture repo-gen cannot map (keys like {sample}); "
            "only cvnets MobileViT v1 (xx_small / x_small / small) is supported: pass one of those, or a timm checkpoint"
        )
    if arch != model:
        raise UserError(f"--weights {source}: a cvnets {arch} checkpoint, not {model}; pass --model {arch}")
    final = _final_norms(state)
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key in final:
            m = _GLOBAL_REP_NORM.match(key)
            assert m is not None
            key = f"{m.group(1)}.norm.{m.group(3)}"
        for pattern, repl in _RULES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out
