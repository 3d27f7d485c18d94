"""Export a PyTorch classifier to ONNX with a dynamic batch axis.

The exported graph has one input `input` float32 [B,3,H,W] and one output `logits`
[B,num_classes]. We use the TorchScript-based exporter (`dynamo=False`): it gives stable node
names, is deterministic (byte-identical files for identical inputs), and timm's MobileViT
exports through it cleanly at opset 17 (LayerNormalization is a single node from opset 17).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import onnx

from repo_gen.errors import BuildFailure

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(module: Any, image_size: int, opset: int = 17) -> onnx.ModelProto:
    """Export `module` (eval mode) to ONNX in memory; the build saves only the cleaned graph."""
    import torch

    dummy = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (dummy,),
                buf,  # type: ignore[arg-type]  # BytesIO is accepted at runtime
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as e:
            raise BuildFailure(f"ONNX export failed at opset {opset}: {e}") from e
    model = onnx.load_from_string(buf.getvalue())
    model.producer_name = "repo-gen"
    model.producer_version = ""  # keep files byte-identical across tool patch versions
    return model
