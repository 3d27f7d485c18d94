"""Our LayerNorm and attention kernels (libmobilevit_plugins.so, C ABI) as PyTorch custom ops.

`torch.library.custom_op` makes them opaque nodes that torch.compile keeps (with a fake
implementation for shapes) and CUDA graphs capture: each call launches on torch's current stream.
`swap_in_kernels` puts them into a timm MobileViT: every transformer LayerNorm and every
`Attention` (qkv packed as [B, N, 3, H, hd], exactly what the kernel's packed layout reads).
Whether that is faster end to end is measured, not assumed: they break inductor's fusions around
the LayerNorm (benchmarks/bench_gpu_serving.py, "plugin vs native").
"""

from __future__ import annotations

from typing import Any

import torch

_LIB: Any = None


def _lib(path: str | None = None):
    global _LIB
    if _LIB is None:
        try:
            from repo_gen.plugins.kernels import KernelLibrary
        except ImportError:  # a served model: the bindings are copied beside model.py (kernel_choice.py)
            from repo_gen_kernels import KernelLibrary  # type: ignore[import-not-found, no-redef]

        _LIB = KernelLibrary(path)
    return _LIB


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what}: {_lib().error_string(status)}")


@torch.library.custom_op("repo_gen::layer_norm", mutates_args=())
def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    d = x.shape[-1]
    # Named, so the FP32 copies live until the launch: a temporary freed after `.data_ptr()` hands its
    # block to the next allocation (gamma and beta then shared one buffer; seen on the H200).
    gamma, beta = weight.float().contiguous(), bias.float().contiguous()
    status = _lib().layernorm(x.data_ptr(), gamma.data_ptr(), beta.data_ptr(),
                              y.data_ptr(), x.numel() // d, d, eps, half=x.dtype == torch.float16,
                              stream=torch.cuda.current_stream(x.device).cuda_stream)
    _check(status, f"layer_norm {list(x.shape)}")
    return y


@layer_norm.register_fake
def _(x, weight, bias, eps):
    # Contiguous, like the real output: empty_like would copy a non-contiguous input's strides, and
    # inductor would then read the kernel's contiguous output with the wrong strides.
    return x.new_empty(x.shape)


@torch.library.custom_op("repo_gen::attention_packed", mutates_args=())
def attention_packed(qkv: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    b, n, _, h, hd = qkv.shape
    qkv = qkv.contiguous()
    o = qkv.new_empty(b, n, h, hd)
    status = _lib().attention_packed(qkv.data_ptr(), o.data_ptr(), b, h, n, hd, scale, half=qkv.dtype == torch.float16,
                                     stream=torch.cuda.current_stream(qkv.device).cuda_stream)
    _check(status, f"attention {list(qkv.shape)}")
    return o


@attention_packed.register_fake
def _(qkv, heads, scale):
    b, n, _, h, hd = qkv.shape
    return qkv.new_empty(b, n, h, hd)


# The modules below call their op through an attribute, never a global of this file: a global read
# makes Dynamo's precompiled bucket import this file by the name it had at the build
# (repo_gen.torch.kernel_ops), which a served model does not have (there this file is
# repo_gen_kernel_ops.py beside model.py; "precompiled buckets did not load (ModuleNotFoundError)").
class KernelLayerNorm(torch.nn.Module):
    def __init__(self, norm: torch.nn.LayerNorm):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps
        self.op = torch.ops.repo_gen.layer_norm.default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, self.weight, self.bias, self.eps)


class KernelAttention(torch.nn.Module):
    """A plain timm `Attention` with its softmax attention in our kernel. A module of its own, not an
    overridden forward on timm's instance: Dynamo's AOT precompile packages a class's forward but not a
    method bound to one instance ('Attention' object has no attribute '_attention_forward', RESULTS.md
    run 17), and without the precompile a server start compiles every bucket. Holds timm's own
    submodules under their names, so the state dict is unchanged."""

    qkv: torch.nn.Module
    proj: torch.nn.Module
    proj_drop: torch.nn.Module
    norm: torch.nn.Module

    def __init__(self, attn: Any):  # timm's Attention
        super().__init__()
        self.num_heads, self.head_dim, self.scale = int(attn.num_heads), int(attn.head_dim), float(attn.scale)
        self.qkv, self.proj, self.proj_drop = attn.qkv, attn.proj, attn.proj_drop
        norm = getattr(attn, "norm", None)  # a post-attention norm (Identity unless scale_norm) in recent timm
        self.norm = torch.nn.Identity() if norm is None else norm
        self.op = torch.ops.repo_gen.attention_packed.default

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        assert attn_mask is None and not is_causal, "our attention kernel has no mask: build this model with --plugins off"
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        out = self.op(qkv, self.num_heads, self.scale).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(self.norm(out)))


def swap_in_kernels(module: torch.nn.Module, library: str | None = None) -> dict[str, int]:
    """Replace transformer LayerNorms and plain timm Attention modules in place; returns the counts.

    Attention with q/k norms or gates is left native (the kernel computes plain softmax attention).
    LayerNorms first, so an attention's own norm is already ours when its module is replaced.
    """
    from timm.models.vision_transformer import Attention

    _lib(library)
    counts = {"layer_norm": 0, "attention": 0}
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.LayerNorm and len(child.normalized_shape) == 1:
                setattr(parent, name, KernelLayerNorm(child))
                counts["layer_norm"] += 1
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Attention) and isinstance(child.q_norm, torch.nn.Identity) \
                    and isinstance(child.k_norm, torch.nn.Identity) and getattr(child, "gate", None) is None:
                setattr(parent, name, KernelAttention(child))
                counts["attention"] += 1
    return counts
