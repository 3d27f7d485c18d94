"""MobileViT (v1: XXS/XS/S, and v2) as timm builds them.

Facts (paper 2110.02178, timm `timm/models/mobilevit.py`): XXS/XS/S have 1.3M/2.3M/5.6M
parameters; preprocessing is mean 0 / std 1, bicubic, crop_pct 0.9 at 256x256.

Why image sizes must be a multiple of 64: the last MobileViT block runs at stride 32 and
unfolds 2x2 patches, so H/32 and W/32 must be even; otherwise timm inserts a bilinear
interpolation in front of every transformer block, which changes the numbers and the graph.
"""

from __future__ import annotations

from repo_gen.models import DataConfig, ModelSpec, register

_MOBILEVIT_DATA = DataConfig((3, 256, 256), "bicubic", 0.9, "center", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

# name, params (M): variants are rows, not code paths.
_V1 = [("mobilevit_xxs", 1.27), ("mobilevit_xs", 2.32), ("mobilevit_s", 5.58)]
_V2 = [
    ("mobilevitv2_050", 1.37),
    ("mobilevitv2_075", 2.87),
    ("mobilevitv2_100", 4.90),
    ("mobilevitv2_125", 7.48),
    ("mobilevitv2_150", 10.59),
    ("mobilevitv2_175", 14.25),
    ("mobilevitv2_200", 18.45),
]

for _name, _params in _V1:
    register(
        ModelSpec(
            name=_name,
            timm_name=_name,
            family="mobilevit",
            default_size=256,
            size_multiple=64,
            data=_MOBILEVIT_DATA,
            params_m=_params,
        )
    )

for _name, _params in _V2:
    register(
        ModelSpec(
            name=_name,
            timm_name=_name,
            family="mobilevitv2",
            default_size=256,
            size_multiple=64,
            data=DataConfig((3, 256, 256), "bicubic", 0.888, "center", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
            params_m=_params,
            notes="MobileViTv2: separable (linear) attention, GroupNorm instead of LayerNorm",
        )
    )

